"""Tests of SAE save/load (toymodels.sae.io): exact round trips, SAELens's layout, atomic writes, and
interchange with SAELens itself in both directions."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sae_helpers import make, perturb
from safetensors.torch import load_file

import toymodels.sae.io as sae_io
from toymodels.sae import (
    SAEConfig,
    architectures,
    load_sae,
    save_sae,
)
from toymodels.sae.registry import SAE_CLASSES

SEEDS = st.integers(0, 2**31 - 1)
SAVED_AS = {
    "standard": "standard",
    "topk": "topk",
    "batchtopk": "jumprelu",
    "jumprelu": "jumprelu",
    "gated": "gated",
    "matryoshka_batchtopk": "jumprelu",
    "p_anneal": "standard",
    "matching_pursuit": "matching_pursuit",
}
BASE_TENSORS = {"W_enc", "b_enc", "W_dec", "b_dec"}
SAVED_TENSORS = {
    "standard": BASE_TENSORS,
    "topk": BASE_TENSORS,
    "jumprelu": BASE_TENSORS | {"threshold"},
    "gated": {"W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"},
    "matching_pursuit": {"W_dec", "b_dec"},  # tied: no encoder
}
SAELENS_KEYS = {
    "d_in",
    "d_sae",
    "dtype",
    "device",
    "apply_b_dec_to_input",
    "normalize_activations",
    "reshape_activations",
    "architecture",
    "metadata",
}


def _equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# our own round trip
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", architectures())
@settings(max_examples=5, deadline=None)
@given(seed=SEEDS, d_in=st.integers(1, 12), d_sae=st.integers(4, 40), data=st.data())
def test_save_load_is_bit_identical(arch, seed, d_in, d_sae, data):
    g = torch.Generator().manual_seed(seed)
    policy = data.draw(st.sampled_from(SAE_CLASSES[arch].decoder_policies), label="decoder_norm")
    sae = perturb(make(arch, d_in=d_in, d_sae=d_sae, seed=seed % 1000, k=min(3, d_sae), decoder_norm=policy), g, 0.3)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_sae(sae, Path(tmp) / "nested" / "sae")
        assert sorted(p.name for p in path.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
        cfg = json.loads((path / "cfg.json").read_text())
        stored = load_file(path / "sae_weights.safetensors")
        loaded = load_sae(path)
    assert type(loaded) is type(sae) and loaded.cfg == type(sae).loaded_config(sae.cfg)
    ours, theirs = sae.export_state(), loaded.export_state()
    assert set(ours) == set(theirs) == set(stored) == SAVED_TENSORS[SAVED_AS[arch]]
    for name in ours:
        _equal(ours[name], theirs[name])
        _equal(ours[name], stored[name])
    folded = policy == "free" and arch in ("topk", "batchtopk", "matryoshka_batchtopk")
    assert (loaded.cfg.decoder_norm == "unit") if folded else (loaded.cfg == sae.cfg)
    if folded:  # the folder holds a unit-decoder SAE, with the norms moved into the encoder
        torch.testing.assert_close(stored["W_dec"].norm(dim=1), torch.ones(d_sae))
        torch.testing.assert_close(stored["W_enc"], sae.W_enc.detach() * sae.decoder_norms().detach())
    x = torch.randn(20, d_in, generator=g)
    with torch.no_grad():
        _equal(sae.encode(x), loaded.encode(x))
        _equal(sae(x), loaded(x))
    # cfg.json: SAELens's keys and inference architecture name, our config in the metadata
    assert set(cfg) >= SAELENS_KEYS
    assert cfg["architecture"] == SAVED_AS[arch]
    assert (cfg["d_in"], cfg["d_sae"]) == (d_in, d_sae)
    assert cfg["apply_b_dec_to_input"] is True and cfg["normalize_activations"] == "none"
    assert SAEConfig.from_dict(cfg["metadata"]["groundtruth"]) == sae.cfg
    if arch == "topk":
        assert cfg["k"] == sae.cfg.k and cfg["rescale_acts_by_decoder_norm"] is False
    if SAVED_AS[arch] == "jumprelu" and arch != "jumprelu":  # one shared BatchTopK threshold, per latent
        assert torch.equal(stored["threshold"], torch.full((d_sae,), float(sae.threshold)))


def test_save_replaces_an_existing_folder(tmp_path):
    g = torch.Generator().manual_seed(0)
    first, second = perturb(make("jumprelu"), g, 0.3), perturb(make("jumprelu"), g, 0.3)
    save_sae(first, tmp_path / "sae")
    save_sae(second, tmp_path / "sae")
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]  # no temporary or ".old" folders left
    assert torch.equal(load_sae(tmp_path / "sae").threshold, second.threshold)


@pytest.mark.parametrize("failing", ["save_file", "sae_cfg_dict"])
def test_failed_save_leaves_previous_folder_intact(tmp_path, monkeypatch, failing):
    g = torch.Generator().manual_seed(1)
    old, new = perturb(make("gated"), g, 0.3), perturb(make("gated"), g, 0.3)
    save_sae(old, tmp_path / "sae")
    before = {p.name: p.read_bytes() for p in (tmp_path / "sae").iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sae_io, failing, boom)
    with pytest.raises(OSError, match="disk full"):
        save_sae(new, tmp_path / "sae")
    with pytest.raises(OSError, match="disk full"):
        save_sae(new, tmp_path / "fresh")
    assert [p.name for p in tmp_path.iterdir()] == ["sae"]  # no half-written folder, no temporaries
    assert {p.name: p.read_bytes() for p in (tmp_path / "sae").iterdir()} == before
    monkeypatch.undo()
    assert torch.equal(load_sae(tmp_path / "sae").r_mag, old.r_mag)


def test_loading_something_that_is_not_an_sae_folder_raises(tmp_path):
    with pytest.raises(ValueError, match="not an SAE folder"):
        load_sae(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not an SAE folder"):
        load_sae(tmp_path / "empty")
    save_sae(make("standard"), tmp_path / "half")
    (tmp_path / "half" / "sae_weights.safetensors").unlink()
    with pytest.raises(ValueError, match="not an SAE folder"):
        load_sae(tmp_path / "half")


def test_loading_mismatched_weights_raises(tmp_path):
    save_sae(make("standard", d_in=8), tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    cfg["metadata"]["groundtruth"]["d_in"] = 9
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape"):
        load_sae(tmp_path / "sae")
    cfg["metadata"]["groundtruth"]["d_in"] = 8
    cfg["metadata"]["groundtruth"]["architecture"] = "jumprelu"  # weights lack the threshold
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="threshold"):
        load_sae(tmp_path / "sae")


# ------------------------------------------------------------------------------------------------
# interchange with SAELens
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sae_lens():
    return pytest.importorskip("sae_lens")


@pytest.mark.parametrize("arch", architectures())
def test_our_folders_load_in_saelens(arch, sae_lens, tmp_path):
    g = torch.Generator().manual_seed(architectures().index(arch))
    ours = perturb(make(arch, d_in=10, d_sae=24, k=5), g, 0.3)
    save_sae(ours, tmp_path / "sae")
    theirs = sae_lens.SAE.load_from_disk(tmp_path / "sae")
    assert theirs.cfg.architecture() == SAVED_AS[arch]
    x = torch.randn(32, 10, generator=g) * 2
    with torch.no_grad():
        codes = ours.encode(x)
        assert int((codes > 0).sum()) > 0
        torch.testing.assert_close(theirs.encode(x), codes, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs.decode(codes), ours.decode(codes), rtol=1e-5, atol=1e-5)


def _saelens_config(sae_lens, arch: str, d_in: int, d_sae: int):
    if arch == "standard":
        return sae_lens.StandardSAEConfig(d_in=d_in, d_sae=d_sae)
    if arch == "topk":
        return sae_lens.TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=3)
    if arch == "jumprelu":
        return sae_lens.JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae)
    return sae_lens.GatedSAEConfig(d_in=d_in, d_sae=d_sae)


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu", "gated"])
def test_saelens_folders_load_with_load_sae(arch, sae_lens, tmp_path):
    g = torch.Generator().manual_seed(5)
    theirs = sae_lens.SAE.from_dict(_saelens_config(sae_lens, arch, 10, 24).to_dict())
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
            if name == "threshold":
                p.abs_()
    theirs.save_model(tmp_path / "sae")
    ours = load_sae(tmp_path / "sae")
    assert ours.architecture == arch and (ours.cfg.d_in, ours.cfg.d_sae) == (10, 24)
    if arch == "topk":
        assert ours.cfg.k == 3
    x = torch.randn(32, 10, generator=g) * 2
    with torch.no_grad():
        codes = theirs.encode(x)
        assert int((codes > 0).sum()) > 0
        torch.testing.assert_close(ours.encode(x), codes, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.decode(codes), theirs.decode(codes), rtol=1e-5, atol=1e-5)
        assert torch.equal(ours.W_dec, theirs.W_dec)
    # and back: our re-save of a SAELens SAE loads in SAELens unchanged
    save_sae(ours, tmp_path / "again")
    again = sae_lens.SAE.load_from_disk(tmp_path / "again")
    for name, value in theirs.state_dict().items():
        assert torch.equal(again.state_dict()[name], value), name


def _saelens_training_config(sae_lens, arch: str, rescale: bool | None):
    shape = {"d_in": 10, "d_sae": 24}
    if arch == "standard":
        return sae_lens.StandardTrainingSAEConfig(**shape)
    if arch == "jumprelu":
        return sae_lens.JumpReLUTrainingSAEConfig(**shape)
    if arch == "gated":
        return sae_lens.GatedTrainingSAEConfig(**shape)
    topk = {**shape, "k": 3, "rescale_acts_by_decoder_norm": rescale}
    if arch == "topk":
        return sae_lens.TopKTrainingSAEConfig(**topk)
    if arch == "batchtopk":
        return sae_lens.BatchTopKTrainingSAEConfig(**topk, topk_threshold_lr=0.5)
    return sae_lens.MatryoshkaBatchTopKTrainingSAEConfig(**topk, topk_threshold_lr=0.5, matryoshka_widths=[4, 10, 24])


@pytest.mark.parametrize(
    "arch, rescale",
    [
        ("standard", None),
        ("jumprelu", None),
        ("gated", None),
        *((arch, rescale) for arch in ("topk", "batchtopk", "matryoshka_batchtopk") for rescale in (False, True)),
    ],
)
def test_saelens_training_folders_load_with_load_sae(arch, rescale, sae_lens, tmp_path):
    """A SAELens *training* SAE saved with ``save_model`` (BatchTopK and Matryoshka: architecture
    ``batchtopk``/``matryoshka_batchtopk`` and a running ``topk_threshold``) loads as our SAE of that
    architecture and computes what SAELens's inference form of the same SAE (``save_inference_model``,
    loaded by SAELens) computes; our re-save loads in SAELens to the same function."""
    g = torch.Generator().manual_seed(11)
    theirs = sae_lens.TrainingSAE.from_dict(_saelens_training_config(sae_lens, arch, rescale).to_dict())
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
            if name == "threshold":
                p.abs_()
        if arch in ("batchtopk", "matryoshka_batchtopk"):  # SAELens's own running update, over a few batches
            for _ in range(5):
                theirs.update_topk_threshold(theirs.encode(torch.randn(64, 10, generator=g) * 2))
            assert float(theirs.topk_threshold) > 0
    theirs.save_model(tmp_path / "training")
    theirs.save_inference_model(tmp_path / "inference")
    assert json.loads((tmp_path / "training" / "cfg.json").read_text())["architecture"] == arch
    reference = sae_lens.SAE.load_from_disk(tmp_path / "inference")
    ours = load_sae(tmp_path / "training")
    assert ours.architecture == arch and (ours.cfg.d_in, ours.cfg.d_sae) == (10, 24)
    if rescale is not None:
        assert ours.cfg.k == 3 and ours.cfg.decoder_norm == ("free" if rescale else "unit")
        assert torch.equal(ours.W_dec, theirs.W_dec)  # raw rows kept, as SAELens trains them
    if arch == "matryoshka_batchtopk":
        assert ours.cfg.matryoshka_prefixes == (4, 10, 24)
    x = torch.randn(64, 10, generator=g) * 2
    with torch.no_grad():
        codes = reference.encode(x)
        torch.testing.assert_close(ours.encode(x), codes, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.decode(codes), reference.decode(codes), rtol=0, atol=1e-6)
        if arch in ("batchtopk", "matryoshka_batchtopk"):  # the threshold decides: positive latents cut
            assert int(((theirs.encode_with_hidden_pre(x)[1] > 0) & (codes == 0)).sum()) > 0
        save_sae(ours, tmp_path / "again")
        again = sae_lens.SAE.load_from_disk(tmp_path / "again")
        torch.testing.assert_close(again.encode(x), codes, rtol=0, atol=1e-6)
        torch.testing.assert_close(again.decode(codes), reference.decode(codes), rtol=0, atol=1e-6)


def test_saelens_batchtopk_with_fractional_k_raises(sae_lens, tmp_path):
    """SAELens's BatchTopK takes a fractional mean k; ours counts whole latents, so only its inference
    form (a JumpReLU folder) loads."""
    cfg = sae_lens.BatchTopKTrainingSAEConfig(d_in=8, d_sae=16, k=2.5)
    theirs = sae_lens.TrainingSAE.from_dict(cfg.to_dict())
    theirs.save_model(tmp_path / "training")
    with pytest.raises(ValueError, match=r"k=2\.5"):
        load_sae(tmp_path / "training")
    theirs.save_inference_model(tmp_path / "inference")
    assert load_sae(tmp_path / "inference").architecture == "jumprelu"


def test_saelens_options_we_cannot_honour_raise(sae_lens, tmp_path):
    cases = {
        "normalised": sae_lens.StandardSAEConfig(d_in=8, d_sae=16, normalize_activations="layer_norm"),
        "no_b_dec": sae_lens.StandardSAEConfig(d_in=8, d_sae=16, apply_b_dec_to_input=False),
    }
    for name, cfg in cases.items():
        sae_lens.SAE.from_dict(cfg.to_dict()).save_model(tmp_path / name)
        with pytest.raises(ValueError, match="not supported"):
            load_sae(tmp_path / name)
    cfg = json.loads((tmp_path / "normalised" / "cfg.json").read_text())
    cfg["architecture"] = "temporal"
    (tmp_path / "normalised" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="cannot load SAELens architecture"):
        load_sae(tmp_path / "normalised")


def test_saelens_rescaled_topk_loads_as_our_free_decoder(sae_lens, tmp_path):
    """SAELens's default TopK training recipe (``rescale_acts_by_decoder_norm=true``) is our free
    decoder policy: the folder loads with its raw rows, computes what SAELens computes, and our
    re-save is the folded unit-row form that SAELens also reads back to the same function."""
    g = torch.Generator().manual_seed(7)
    theirs = sae_lens.SAE.from_dict(
        sae_lens.TopKSAEConfig(d_in=10, d_sae=24, k=3, rescale_acts_by_decoder_norm=True).to_dict()
    )
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    assert float((theirs.W_dec.detach().norm(dim=1) - 1).abs().max()) > 0.1  # rows far from unit norm
    theirs.save_model(tmp_path / "sae")
    ours = load_sae(tmp_path / "sae")
    assert ours.architecture == "topk" and ours.cfg.decoder_norm == "free" and ours.cfg.k == 3
    assert torch.equal(ours.W_dec, theirs.W_dec)
    x = torch.randn(32, 10, generator=g) * 2
    with torch.no_grad():
        codes = theirs.encode(x)
        torch.testing.assert_close(ours.encode(x), codes, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
        save_sae(ours, tmp_path / "again")
        again = sae_lens.SAE.load_from_disk(tmp_path / "again")
        assert again.cfg.rescale_acts_by_decoder_norm is False
        torch.testing.assert_close(again(x), theirs(x), rtol=1e-5, atol=1e-5)
