"""The conformance suite: built-in SAEs pass it, deliberately broken SAEs are caught by the property
that targets their bug, a SAELens SAE runs through it unchanged, and the CLI and pytest plugin work."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.cli import main
from analysis.conformance import PROPERTIES, Declared, check_sae, declared, load_factory, results_table
from analysis.conformance.properties import hierarchical_data, permuted
from toymodels.sae import SAEConfig, make_sae
from toymodels.sae.factories import factories
from toymodels.sae.registry import SAE_CLASSES

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import broken_saes  # noqa: E402


@pytest.mark.parametrize("name", sorted(factories()))
def test_builtin_saes_pass_the_fast_profile(name):
    results = check_sae(factories()[name], "fast")
    assert [r.name for r in results] == [p.name for p in PROPERTIES]
    assert not [r for r in results if r.status == "failed"], results_table(results)
    ran = {r.name for r in results if r.status == "passed"}
    # What every built-in can be checked for: nothing essential is skipped.
    assert {"shapes_and_dtypes", "save_load_round_trip", "training_reduces_loss", "recovers_easy_ground_truth"} <= ran
    # the unit-norm check runs exactly where the factory builds a unit decoder
    assert ("decoder_norm_policy" in ran) == (factories()[name](4, 8).decoder_norm == "unit")
    assert "monotone_sparsity_knob" in ran


@pytest.mark.parametrize(("name", "expected"), sorted(broken_saes.EXPECTED.items()))
def test_broken_saes_are_caught_by_the_targeted_property(name, expected):
    results = {r.name: r for r in check_sae(getattr(broken_saes, name), "fast")}
    assert results[expected].status == "failed", results_table(list(results.values()))
    assert "counterexample {" in results[expected].detail  # the (shrunk) inputs are reported
    assert "d_in" in results[expected].detail


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_hierarchical_data_is_the_forest_the_property_describes(seed):
    model = hierarchical_data(16, 16, seed)
    n = 20_000
    codes = model.sample(n, torch.Generator().manual_seed(seed)).codes.to_dense() > 0
    # four trees laid out breadth first: parents 0-3, then three children each
    assert model.parent.tolist() == [-1] * 4 + [p for p in range(4) for _ in range(3)]
    torch.testing.assert_close(model.directions @ model.directions.T, torch.eye(16), rtol=0, atol=1e-5)
    children = codes[:, 4:].reshape(n, 4, 3)
    assert not (children.any(-1) & ~codes[:, :4]).any()  # a child fires only with its parent
    assert int(children.sum(-1).max()) == 1  # at most one child at a time
    # every feature fires with p = 0.2, and mutual exclusion keeps one of the children that would fire
    rate = codes[:, :4].float().mean(0)
    assert float((rate - 0.2).abs().max()) < 0.015, rate
    with_child = children.any(-1)[codes[:, :4]].float().mean()
    assert abs(float(with_child) - (1 - 0.8**3)) < 0.02, with_child
    # true L0: 4 parents at 0.2, each with a child half the time, 0.8 * 1.488 = 1.19; the property's k is 1
    true_l0 = float(codes.sum(1).float().mean())
    assert abs(true_l0 - 0.8 * (2 - 0.8**3)) < 0.04, true_l0


def _declared_hierarchical(name: str):
    """A built-in factory whose SAEs declare, as a user's would, that they are built for hierarchies."""

    def make(d_in, d_sae, *, seed=0, **overrides):
        sae = factories()[name](d_in, d_sae, seed=seed, **overrides)
        sae.groundtruth_declares = {
            "nonnegative": True,
            "sparsity": sae.sparsity,
            "k": sae.cfg.k,
            "knob": "k",
            "built_for": "hierarchical",
        }
        return sae

    return make


@pytest.mark.parametrize(
    ("name", "message"),
    [
        # k = 1 per sample: a parent and its child never fire together, so children absorb parents
        ("topk", r"MCC 0\.[0-8]\d* < 0\.95 on the children after 400 steps"),
        # the reference itself, trained identically: equal absorption is not lower
        ("batchtopk", r"absorption (0\.\d+) is not below BatchTopK's \1 at k=1"),
    ],
)
def test_declaring_hierarchical_data_holds_an_sae_to_it(name, message):
    assert declared(_declared_hierarchical(name)(16, 32)).built_for == "hierarchical"
    (r,) = check_sae(_declared_hierarchical(name), "fast", ("recovers_easy_ground_truth",))
    assert r.status == "failed" and re.search(message, r.detail), r.detail


def test_shapes_property_catches_a_wrong_shape():
    class Transposed(torch.nn.Module):
        def __init__(self, d_in, d_sae):
            super().__init__()
            self.W_dec = torch.nn.Parameter(torch.randn(d_in, d_sae))  # wrong layout

        def encode(self, x):
            return x @ self.W_dec

        def decode(self, c):
            return c @ self.W_dec.T

    (r,) = check_sae(lambda d_in, d_sae, seed=0: Transposed(d_in, d_sae), "fast", ("shapes_and_dtypes",))
    assert r.status == "failed" and "W_dec has shape" in r.detail


def test_undeclared_promises_are_skipped_not_failed():
    class Linear(torch.nn.Module):
        def __init__(self, d_in, d_sae, seed):
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.W_dec = torch.nn.Parameter(torch.randn(d_sae, d_in, generator=g))

        def encode(self, x):
            return x @ self.W_dec.T

        def decode(self, c):
            return c @ self.W_dec

    results = {r.name: r for r in check_sae(lambda d_in, d_sae, seed=0: Linear(d_in, d_sae, seed), "fast")}
    assert results["nonnegative_codes"].status == "skipped"
    assert results["training_reduces_loss"].detail == "no training step"
    assert results["save_load_round_trip"].detail == "no save/load methods"
    assert results["latent_permutation_equivariance"].status == "passed"
    assert results["deterministic_under_seed"].status == "passed"


def test_permuted_copy_moves_every_latent_axis():
    sae = factories()["jumprelu"](6, 10, seed=3)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    other = permuted(sae, perm, 10)
    torch.testing.assert_close(other.W_enc, sae.W_enc[:, perm], rtol=0, atol=0)
    torch.testing.assert_close(other.W_dec, sae.W_dec[perm], rtol=0, atol=0)
    torch.testing.assert_close(other.threshold, sae.threshold[perm], rtol=0, atol=0)
    torch.testing.assert_close(other.b_dec, sae.b_dec, rtol=0, atol=0)


def test_declarations_of_builtins_and_bad_declarations():
    assert declared(factories()["topk"](4, 8)) == Declared(
        nonnegative=True, sparsity="topk", k=4, decoder_norm="free", knob="k", knob_raises_l0=True
    )
    assert declared(factories()["standard_resampling"](4, 8)).revives_dead_within == 45
    assert declared(factories()["standard"](4, 8)).revives_dead_within is None  # free decoder: no resampling
    for arch, cls in SAE_CLASSES.items():  # conformance declares whichever policy the SAE was built with
        for policy in cls.decoder_policies:
            assert declared(make_sae(SAEConfig(arch, 4, 8, k=2, decoder_norm=policy))).decoder_norm == policy
    assert declared(factories()["gated"](4, 8)).knob_raises_l0 is False
    built_for = {name: declared(make(8, 16)).built_for for name, make in factories().items()}
    assert built_for == {name: "hierarchical" if name == "matryoshka_batchtopk" else "flat" for name in factories()}
    with pytest.raises(ValueError, match="needs a positive integer k"):
        Declared(sparsity="topk")
    with pytest.raises(ValueError, match="sparsity"):
        Declared(sparsity="top-k")
    with pytest.raises(ValueError, match="built_for must be one of"):
        Declared(built_for="tree")

    class Odd:
        groundtruth_declares = {"nonnegative": True, "colour": "red"}

    with pytest.raises(ValueError, match="colour"):
        declared(Odd())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("toymodels.sae.factories", "module:callable"),
        ("no_such_module_xyz:make", "cannot import"),
        ("toymodels.sae.factories:nope", "no attribute"),
        ("toymodels.sae.factories:__doc__", "not callable"),
    ],
)
def test_load_factory_errors_name_the_factory(spec, message):
    with pytest.raises(ValueError, match=message):
        load_factory(spec)


def test_check_sae_rejects_unknown_profile_and_property():
    with pytest.raises(ValueError, match="profile"):
        check_sae(factories()["topk"], "slow")
    with pytest.raises(ValueError, match="unknown properties"):
        check_sae(factories()["topk"], "fast", ("nope",))


def test_saelens_sae_runs_through_the_suite():
    sae_lens = pytest.importorskip("sae_lens")

    def make(d_in, d_sae, *, seed=0):
        torch.manual_seed(seed)  # SAELens initialises from the global generator
        return sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=4))

    results = {r.name: r for r in check_sae(make, "fast")}
    assert not [r for r in results.values() if r.status == "failed"], results_table(list(results.values()))
    for name in ("declared_sparsity", "save_load_round_trip", "latent_permutation_equivariance", "nonnegative_codes"):
        assert results[name].status == "passed"
    assert results["recovers_easy_ground_truth"].detail == "no training step"


def test_cli_check_sae(capsys):
    code = main(["check-sae", "toymodels.sae.factories:topk", "--only", "shapes_and_dtypes", "declared_sparsity"])
    out = capsys.readouterr().out
    assert code == 0
    assert "shapes_and_dtypes" in out and "2 passed, 0 failed" in out
    code = main(["check-sae", "broken_saes:topk_plus_one", "--only", "declared_sparsity"])
    out = capsys.readouterr().out
    assert code == 1 and "failed" in out and "k=4" in out
    assert main(["check-sae", "nope"]) == 2
    assert "module:callable" in capsys.readouterr().err


def test_a_factory_of_the_wrong_signature_is_named_once(capsys):
    """Not twelve failed properties: one message with the signature the suite calls."""
    assert main(["check-sae", "broken_saes:no_seed"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "no_seed(d_in, d_sae)" in err and "make(d_in, d_sae, *, seed=0, **overrides)" in err
    with pytest.raises(TypeError, match=r"make\(d_in, d_sae, \*, seed=0, \*\*overrides\)"):
        check_sae(broken_saes.no_seed)


def test_pytest_plugin_runs_the_properties(tmp_path):
    (tmp_path / "test_empty.py").write_text("def test_nothing():\n    pass\n")
    env_path = f"{HERE}"
    run = lambda spec, select: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", f"--groundtruth-sae={spec}"]
        + ["-k", select],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": env_path},
        timeout=300,
    )
    ok = run("toymodels.sae.factories:topk", "nothing or shapes or sparsity or dead")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "4 passed, 1 skipped" in ok.stdout  # test_nothing and three properties pass; dead_latents skips
    bad = run("broken_saes:topk_plus_one", "declared_sparsity")
    assert bad.returncode == 1
    assert "declared_sparsity: AssertionError: a sample has 5 active latents" in bad.stdout
    unusable = run("broken_saes:no_seed", "declared_sparsity")
    assert unusable.returncode == 4  # pytest's usage error, before any test runs
    assert "--groundtruth-sae: factory no_seed(d_in, d_sae) cannot be called" in unusable.stderr


def test_readme_example_sae_passes(tmp_path, monkeypatch):
    readme = (HERE.parents[1] / "README.md").read_text()
    code = readme.split("# mypkg/my_sae.py\n", 1)[1].split("```", 1)[0]
    (tmp_path / "readme_sae.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    results = {r.name: r for r in check_sae("readme_sae:make_sae", "fast")}
    assert not [r for r in results.values() if r.status == "failed"], results_table(list(results.values()))
    for name in ("nonnegative_codes", "decoder_norm_policy", "training_reduces_loss", "recovers_easy_ground_truth"):
        assert results[name].status == "passed"
    assert results["monotone_sparsity_knob"].status == "passed"
    assert results["save_load_round_trip"].status == "skipped"


def test_readme_names_the_data_each_recovery_property_uses():
    readme = (HERE.parents[1] / "README.md").read_text()
    line = readme.split("`groundtruth_declares`): hierarchical for ", 1)[1].split(", flat for the rest", 1)[0]
    assert set(re.findall(r"`(\w+)`", line)) == {a for a, c in SAE_CLASSES.items() if c.built_for == "hierarchical"}


def test_profiles_reject_sizes_the_properties_cannot_use():
    from analysis.conformance import Profile

    for bad in ((16, 16), (12, 40), (2, 2), (4, 6)):  # (4, 6): no room for a parent and three children
        with pytest.raises(ValueError, match="d_sae"):
            Profile("x", 1, 1, (bad,), 1, 1, 1, 1)
    Profile("x", 1, 1, ((4, 8),), 1, 1, 1, 1)


@pytest.mark.parametrize(
    "note",
    [
        "Falsifying example: run(\n    case={'d_in': 16, 'd_sae': 32, 'seed': 0, 'scale': 1.0},\n)",
        "Failing test case: run(\n    case={'d_in': 16, 'd_sae': 32, 'seed': 0,  # or any other generated value\n"
        "  'scale': 1.0,  },\n)",
    ],
)
def test_counterexample_is_read_from_either_hypothesis_wording(note):
    from analysis.conformance.runner import _describe

    err = AssertionError("a sample has 5 active latents, k=4")
    err.add_note(note)
    assert _describe(err) == (
        "AssertionError: a sample has 5 active latents, k=4; counterexample {'d_in': 16, 'd_sae': 32, 'seed': 0, 'scale': 1.0}"
    )
