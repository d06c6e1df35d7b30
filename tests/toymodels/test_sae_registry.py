"""The SAE registry: declarations are checked, duplicates refused, and every derived list follows it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.conformance import check_sae
from analysis.conformance.subject import declared
from analysis.experiments.recovery import sae_config
from toymodels.sae import (
    SAE_CLASSES,
    LossTerms,
    SAEConfig,
    SparseAutoencoder,
    architecture_table,
    architectures,
    make_sae,
    register_sae,
    sae_class,
)
from toymodels.sae import factories as factory_module
from toymodels.sae.base import mse_loss
from toymodels.sae.registry import _CLASSES, DECLARATIONS
from toymodels.sae.strategies import sae_configs

README = Path(__file__).resolve().parents[2] / "README.md"


class ClampedSAE(SparseAutoencoder):
    """A user's architecture: ReLU codes clipped at 1, with an L1 penalty."""

    architecture = "clamped"
    paper = "a test"
    sparsity_knob = "sparsity_coefficient"
    knob_raises_l0 = False
    sparsity = "penalty"
    decoder_policies = ("unit",)
    saved_as = "standard"
    suite_defaults = {"sparsity_coefficient": 0.05}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.pre_activations(x).clamp(0.0, 1.0)

    def training_loss(self, x: torch.Tensor, progress: float) -> LossTerms:
        codes = self.encode(x)
        mse = mse_loss(x, self.decode(codes))
        return LossTerms(mse + self.cfg.sparsity_coefficient * codes.sum(-1).mean(), mse, codes.detach())


@pytest.fixture
def registered():
    register_sae(ClampedSAE)
    yield ClampedSAE
    _CLASSES.pop("clamped")


def test_a_users_class_is_everywhere_once_registered(registered):
    assert "clamped" in architectures() and sae_class("clamped") is ClampedSAE
    sae = make_sae(SAEConfig("clamped", 4, 8))
    assert isinstance(sae, ClampedSAE) and sae.decoder_norm == "unit"  # its one policy is its default
    with pytest.raises(ValueError, match="decoder_norm for clamped must be one of \\('unit',\\)"):
        SAEConfig("clamped", 4, 8, decoder_norm="free")
    made = factory_module.clamped(4, 8, seed=2)  # check-sae toymodels.sae.factories:clamped
    assert made.cfg.sparsity_coefficient == 0.05 and made.cfg.seed == 2
    assert "clamped" in factory_module.factories()
    assert sae_config("clamped", 0.3, 4, 8, 0).sparsity_coefficient == 0.3
    d = declared(sae)
    assert (d.sparsity, d.knob, d.knob_raises_l0, d.decoder_norm) == ("penalty", "sparsity_coefficient", False, "unit")
    assert "| `clamped` | a test | `sparsity_coefficient` (lowers L0) | penalty | unit | `standard` |" in (
        architecture_table()
    )
    results = check_sae(factory_module.clamped, "fast", ("shapes_and_dtypes", "save_load_round_trip"))
    assert [r.status for r in results] == ["passed", "passed"], results


@given(data=st.data())
@settings(max_examples=5, deadline=None)
def test_strategies_draw_registered_user_classes(data):
    register_sae(ClampedSAE)
    try:
        cfg = data.draw(sae_configs(architecture=st.just("clamped")))
        assert cfg.architecture == "clamped" and cfg.decoder_norm == "unit"
    finally:
        _CLASSES.pop("clamped")


def test_duplicates_and_non_saes_are_refused(registered):
    register_sae(ClampedSAE)  # the same class again is harmless

    class Impostor(ClampedSAE):
        architecture = "clamped"
        paper = "another"

    with pytest.raises(ValueError, match="architecture 'clamped' is already registered by .*ClampedSAE"):
        register_sae(Impostor)
    with pytest.raises(ValueError, match="architecture 'topk' is already registered"):
        register_sae(type("TopK2", (ClampedSAE,), {"architecture": "topk", "paper": "x"}))
    with pytest.raises(TypeError, match="needs a SparseAutoencoder subclass"):
        register_sae(int)
    assert sae_class("clamped") is ClampedSAE


@pytest.mark.parametrize("missing", sorted(DECLARATIONS))
def test_a_class_lacking_a_declaration_is_refused(missing):
    body = {d: getattr(ClampedSAE, d) for d in DECLARATIONS if d != missing}
    cls = type("Partial", (SparseAutoencoder,), body)
    with pytest.raises(TypeError, match=f"Partial does not declare {missing}"):
        register_sae(cls)
    assert "clamped" not in SAE_CLASSES


def test_a_subclass_must_declare_its_own_name_and_paper():
    with pytest.raises(TypeError, match="does not declare architecture, paper"):
        register_sae(type("Child", (ClampedSAE,), {}))
    with pytest.raises(TypeError, match="does not declare paper"):
        register_sae(type("Child", (ClampedSAE,), {"architecture": "child"}))


@pytest.mark.parametrize(
    ("declaration", "value"),
    [
        ("architecture", "has space"),
        ("paper", " "),
        ("sparsity_knob", "l1"),
        ("knob_raises_l0", 1),
        ("sparsity", "topk-ish"),
        ("decoder_policies", ("unit", "unit")),
        ("decoder_policies", ["unit"]),
        ("decoder_policies", ("tied",)),
        ("saved_as", ""),
        ("suite_defaults", {"d_sae": 3}),
        ("suite_defaults", ["k"]),
        ("built_for", "trees"),
    ],
)
def test_bad_declarations_are_refused_naming_them(declaration, value):
    cls = type("Bad", (ClampedSAE,), {"architecture": "bad", "paper": "p", declaration: value})
    with pytest.raises(TypeError, match=f"Bad.{declaration} must be"):
        register_sae(cls)
    assert "bad" not in SAE_CLASSES


def test_unknown_architectures_name_the_known_ones():
    with pytest.raises(ValueError, match="architecture must be one of .*'topk'.*got 'topkk'"):
        SAEConfig("topkk", 4, 8)
    with pytest.raises(ValueError, match="got 'topkk'"):
        sae_config("topkk", 4, 4, 8, 0)


def test_resampling_is_refused_where_the_class_does_not_resample():
    assert [a for a in architectures() if sae_class(a).resamples_dead] == ["standard", "p_anneal"]
    with pytest.raises(ValueError, match="resample_every=10: topk does not resample dead latents"):
        SAEConfig("topk", 4, 8, k=2, decoder_norm="unit", resample_every=10)


def test_builtin_declarations_match_their_behaviour():
    """The declared knob direction and sparsity kind are what the built-ins do (hand-checked cases)."""
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
    for arch in architectures():
        cls = sae_class(arch)
        codes = make_sae(SAEConfig(arch, 6, 12, k=3, decoder_norm=cls.decoder_policies[0])).encode(x)
        if cls.sparsity in ("topk", "pursuit"):
            assert int((codes != 0).sum(-1).max()) <= 3
        assert bool((codes >= 0).all())
        assert cls.knob_raises_l0 == (cls.sparsity_knob == "k")


def test_readme_table_is_the_registrys():
    assert architecture_table() in README.read_text()
