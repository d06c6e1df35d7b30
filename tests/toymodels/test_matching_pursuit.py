"""Tests of the Matching Pursuit SAE (toymodels.sae.matching_pursuit): hand-worked pursuits, a plain
per-sample greedy loop on random inputs, the pursuit's invariants, and SAELens's MatchingPursuitSAE."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sae_helpers import make, perturb

from groundtruth.strategies import seeds
from toymodels.sae import MatchingPursuitSAE, SAEConfig, load_sae, make_sae, save_sae
from toymodels.sae.base import mse_loss
from toymodels.sae.training import train_sae
from toymodels.training import TrainConfig


def greedy_pursuit(x: torch.Tensor, atoms: torch.Tensor, b_dec: torch.Tensor, k: int, threshold: float) -> torch.Tensor:
    """Matching pursuit one sample and one atom at a time in Python floats: the rules of SAELens's
    ``MatchingPursuitSAE``, written as a plain loop."""
    rows = atoms.tolist()
    codes = torch.zeros(x.shape[0], len(rows), dtype=torch.float64)
    for i, sample in enumerate((x - b_dec).tolist()):
        residual, support = sample, set()
        for _ in range(k):
            correlations = [sum(r * a for r, a in zip(residual, row, strict=True)) for row in rows]
            best = max(range(len(rows)), key=lambda j: correlations[j])  # the first of equal maxima
            value = max(correlations[best], 0.0)
            codes[i, best] += value
            residual = [r - value * a for r, a in zip(residual, rows[best], strict=True)]
            grown = support | ({best} if value > 0 else set())
            if grown == support:  # no new latent: the pursuit ends
                break
            support = grown
            if threshold > 0 and sum(r * r for r in residual) ** 0.5 < threshold:
                break
    return codes


def pursuit_sae(atoms: list[list[float]], k: int, b_dec=None, threshold: float = 0.0) -> MatchingPursuitSAE:
    w = torch.tensor(atoms, dtype=torch.float64)
    sae = make_sae(SAEConfig("matching_pursuit", w.shape[1], w.shape[0], k=k, residual_threshold=threshold))
    sae = sae.double()
    with torch.no_grad():
        sae.W_dec.copy_(w)
        if b_dec is not None:
            sae.b_dec.copy_(torch.tensor(b_dec, dtype=torch.float64))
    return sae


# ------------------------------------------------------------------------------------------------
# hand-worked pursuits
# ------------------------------------------------------------------------------------------------

# Atoms a0 = (1, 0), a1 = (-0.6, 0.8), a2 = (-1, 0), a3 = (0, -1) and x = (1, 1). Step 1: correlations 1, 0.2,
# -1, -1; a0 takes 1, residual (0, 1). Step 2: 0, 0.8, 0, -1; a1 takes 0.8, residual (0, 1) - 0.8 (-0.6, 0.8) =
# (0.48, 0.36), norm 0.6. Step 3: 0.48, 0, -0.48, -0.36; a0 again: its code grows to 1.48, residual (0, 0.36),
# and the pursuit ends there (no new latent), whatever k.
ATOMS = [[1.0, 0.0], [-0.6, 0.8], [-1.0, 0.0], [0.0, -1.0]]


@pytest.mark.parametrize(
    ("k", "threshold", "codes", "residual"),
    [
        (1, 0.0, [1.0, 0.0, 0.0, 0.0], [0.0, 1.0]),
        (2, 0.0, [1.0, 0.8, 0.0, 0.0], [0.48, 0.36]),
        (3, 0.0, [1.48, 0.8, 0.0, 0.0], [0.0, 0.36]),
        (4, 0.0, [1.48, 0.8, 0.0, 0.0], [0.0, 0.36]),  # ended at step 3
        (4, 0.5, [1.48, 0.8, 0.0, 0.0], [0.0, 0.36]),  # 0.6 >= 0.5 after step 2: on to step 3
        (4, 0.7, [1.0, 0.8, 0.0, 0.0], [0.48, 0.36]),  # 0.6 < 0.7 after step 2
        (4, 1.5, [1.0, 0.0, 0.0, 0.0], [0.0, 1.0]),  # 1 < 1.5 after step 1
    ],
)
def test_hand_worked_pursuit(k, threshold, codes, residual):
    sae = pursuit_sae(ATOMS, k, b_dec=[1.0, -1.0], threshold=threshold)
    x = torch.tensor([[2.0, 0.0]], dtype=torch.float64)  # (1, 1) once b_dec is subtracted
    got_codes, got_residual = sae.pursue(x)
    torch.testing.assert_close(got_codes, torch.tensor([codes], dtype=torch.float64))
    torch.testing.assert_close(got_residual, torch.tensor([residual], dtype=torch.float64))
    torch.testing.assert_close(sae.decode(got_codes), x - got_residual)  # b_dec added back
    torch.testing.assert_close(sae.encode(x[None]), got_codes[None])  # leading dimensions kept


def test_orthonormal_dictionary_gives_the_positive_coordinates():
    """Over an orthonormal basis every step takes the largest remaining positive coordinate once; after
    them no correlation is positive and the pursuit ends, however large k is."""
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    sae = pursuit_sae(q.T.tolist(), 6)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    coordinates = x @ q
    torch.testing.assert_close(sae.encode(x), coordinates.clamp(min=0))
    fewer = pursuit_sae(q.T.tolist(), 2).encode(x)  # the two largest positive coordinates
    top = coordinates.clamp(min=0).topk(2, dim=-1)
    torch.testing.assert_close(fewer, torch.zeros_like(fewer).scatter(1, top.indices, top.values))


def test_zero_input_has_no_active_latent():
    sae = make("matching_pursuit", k=4)
    assert torch.equal(sae.encode(torch.zeros(3, 8)), torch.zeros(3, 16))


# ------------------------------------------------------------------------------------------------
# against a plain greedy loop, and the pursuit's invariants
# ------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=seeds(),
    d_in=st.integers(1, 8),
    d_sae=st.integers(1, 12),
    n=st.integers(1, 6),
    data=st.data(),
)
def test_codes_match_a_plain_greedy_loop(seed, d_in, d_sae, n, data):
    k = data.draw(st.integers(1, d_sae), label="k")
    threshold = data.draw(st.just(0.0) | st.floats(0.05, 3.0), label="residual_threshold")
    unit = data.draw(st.booleans(), label="unit rows")
    g = torch.Generator().manual_seed(seed)
    sae = make_sae(SAEConfig("matching_pursuit", d_in, d_sae, seed=seed % 1000, k=k, residual_threshold=threshold))
    sae = perturb(sae, g, 0.3).double()
    if unit:
        with torch.no_grad():
            sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64) * 2
    expected = greedy_pursuit(x, sae.W_dec.detach(), sae.b_dec.detach(), k, threshold)
    with torch.no_grad():
        codes, residual = sae.pursue(x)
    torch.testing.assert_close(codes, expected, rtol=0, atol=1e-9)
    assert torch.equal(codes != 0, expected != 0)
    torch.testing.assert_close(residual, x - sae.decode(codes), rtol=0, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=seeds(), d_sae=st.integers(2, 24), n=st.integers(1, 16), data=st.data())
def test_more_steps_extend_the_pursuit_and_never_add_error(seed, d_sae, n, data):
    """With unit rows each step removes the residual's component along its row: a pursuit of k + 1
    steps is the pursuit of k plus one step, so its support contains k's and its error is no larger,
    and no pursuit reconstructs worse than the empty code."""
    k = data.draw(st.integers(1, d_sae - 1), label="k")
    g = torch.Generator().manual_seed(seed)
    short = perturb(make("matching_pursuit", d_sae=d_sae, seed=seed % 1000, k=k), g, 0.3)
    with torch.no_grad():
        short.W_dec /= short.W_dec.norm(dim=1, keepdim=True)
    long = make_sae(short.cfg.replace(k=k + 1))
    long.load_state_dict(short.state_dict())
    x = torch.randn(n, 8, generator=g) * 3
    with torch.no_grad():
        (a, ra), (b, rb) = short.pursue(x), long.pursue(x)
    grew = b - a
    assert bool((grew >= 0).all()) and bool(((grew > 0).sum(-1) <= 1).all())  # one latent grew, or none
    assert bool(((a != 0) <= (b != 0)).all())
    assert bool(((a != 0).sum(-1) <= k).all())
    assert bool((rb.norm(dim=-1) <= ra.norm(dim=-1) * (1 + 1e-5)).all())
    assert bool((ra.norm(dim=-1) <= (x - short.b_dec).norm(dim=-1) * (1 + 1e-5)).all())


@settings(max_examples=10, deadline=None)
@given(seed=seeds(), threshold=st.just(0.0) | st.floats(0.1, 2.0))
def test_training_loss_is_the_reconstruction_error_with_its_gradient(seed, threshold):
    """The loss reads the pursuit's final residual; it and its gradients equal those of MSE(decode(encode(x)), x)."""
    g = torch.Generator().manual_seed(seed)
    sae = perturb(make("matching_pursuit", seed=seed % 1000, k=3, residual_threshold=threshold), g, 0.3)
    x = torch.randn(24, 8, generator=g)
    terms = sae.training_loss(x, 0.5)
    terms.total.backward()
    ours = {name: p.grad.clone() for name, p in sae.named_parameters()}
    sae.zero_grad()
    reference = mse_loss(x, sae.decode(sae.encode(x)))
    reference.backward()
    torch.testing.assert_close(terms.total, reference)
    torch.testing.assert_close(terms.codes, sae.encode(x).detach())
    for name, p in sae.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_config_checks_the_residual_threshold():
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="residual_threshold"):
            SAEConfig("matching_pursuit", 4, 8, k=2, residual_threshold=bad)
    with pytest.raises(ValueError, match="k=9 exceeds d_sae=8"):
        SAEConfig("matching_pursuit", 4, 8, k=9)


# ------------------------------------------------------------------------------------------------
# SAELens's MatchingPursuitSAE
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sae_lens():
    return pytest.importorskip("sae_lens")


@pytest.mark.parametrize("threshold", [0.0, 3.0])  # 3: about the median residual norm
def test_saelens_computes_what_we_compute_from_our_folder(sae_lens, tmp_path, threshold):
    """A trained SAE's folder loads in SAELens as its MatchingPursuitSAE, with our k as ``max_iterations``;
    codes, reconstructions and the gradients of the reconstruction loss are SAELens's."""
    g = torch.Generator().manual_seed(2)
    ours = make("matching_pursuit", d_in=10, d_sae=24, k=5, residual_threshold=threshold)
    batches = iter(lambda: torch.randn(32, 10, generator=g) * 2, None)
    train_sae(ours, batches, TrainConfig(steps=5, lr=0.05, decay_fraction=0.0), progress=False)
    save_sae(ours, tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert (cfg["max_iterations"], cfg["residual_threshold"], cfg["stop_on_duplicate_support"]) == (5, threshold, True)
    theirs = sae_lens.SAE.load_from_disk(tmp_path / "sae")
    assert isinstance(theirs, sae_lens.MatchingPursuitSAE)
    x = torch.randn(64, 10, generator=g) * 2
    codes = ours.encode(x)
    stopped = ours.pursue(x)[1].norm(dim=-1) < threshold  # by the threshold, before k steps
    assert 0 < int((stopped & ((codes > 0).sum(-1) < 5)).sum()) < 64 if threshold else True
    torch.testing.assert_close(theirs.encode(x), codes, rtol=0, atol=1e-6)
    torch.testing.assert_close(theirs.decode(codes), ours.decode(codes), rtol=0, atol=1e-6)
    ours.zero_grad(set_to_none=True)
    for sae in (ours, theirs):
        mse_loss(x, sae.decode(sae.encode(x))).backward()
    for name in ("W_dec", "b_dec"):
        torch.testing.assert_close(getattr(theirs, name).grad, getattr(ours, name).grad, rtol=1e-5, atol=1e-6)


def test_saelens_folders_load_with_load_sae(sae_lens, tmp_path):
    g = torch.Generator().manual_seed(5)
    cases = {"given": (3, 0.05), "default": (None, 1e-2)}  # max_iterations None: d_in steps
    for name, (steps, threshold) in cases.items():
        config = {"d_in": 10, "d_sae": 24, "max_iterations": steps}
        if name == "given":
            config["residual_threshold"] = threshold
        theirs = sae_lens.SAE.from_dict(sae_lens.MatchingPursuitSAEConfig(**config).to_dict())
        with torch.no_grad():
            theirs.W_dec.add_(torch.randn(theirs.W_dec.shape, generator=g) * 0.3)
            theirs.b_dec.add_(torch.randn(10, generator=g) * 0.3)
        theirs.save_model(tmp_path / name)
        ours = load_sae(tmp_path / name)
        assert ours.architecture == "matching_pursuit"
        assert (ours.cfg.k, ours.cfg.residual_threshold) == (steps or 10, threshold)
        x = torch.randn(32, 10, generator=g) * 2
        with torch.no_grad():
            codes = theirs.encode(x)
            torch.testing.assert_close(ours.encode(x), codes, rtol=0, atol=1e-6)
            torch.testing.assert_close(ours.decode(codes), theirs.decode(codes), rtol=0, atol=1e-6)
            save_sae(ours, tmp_path / f"{name}-again")  # and back
            again = sae_lens.SAE.load_from_disk(tmp_path / f"{name}-again")
            torch.testing.assert_close(again.encode(x), codes, rtol=0, atol=1e-6)


def test_saelens_pursuits_we_cannot_run_raise(sae_lens, tmp_path):
    cases = {
        "no_duplicate_stop": ({"d_in": 8, "d_sae": 16, "stop_on_duplicate_support": False}, "stop_on_duplicate"),
        "too_many_steps": ({"d_in": 8, "d_sae": 16, "max_iterations": 17}, "max_iterations=17"),
        "undercomplete": ({"d_in": 8, "d_sae": 6}, "max_iterations=8"),  # None: d_in = 8 steps over 6 latents
    }
    for name, (config, message) in cases.items():
        sae_lens.SAE.from_dict(sae_lens.MatchingPursuitSAEConfig(**config).to_dict()).save_model(tmp_path / name)
        with pytest.raises(ValueError, match=message):
            load_sae(tmp_path / name)
