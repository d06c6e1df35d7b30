"""Tests of analysis.metrics.recovery against hand-worked cases, brute force, naive loops and SAELens."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.metrics.hierarchy import absorption_gap, hedging
from analysis.metrics.recovery import (
    RecoveryReport,
    absorption,
    cosine_matrix,
    dead_latents,
    fve,
    l0,
    latent_classification,
    mcc,
    mmcs,
    mse,
    relative_reconstruction_bias,
    score_sae,
    shrinkage,
    uniqueness,
)

FAST = settings(max_examples=25, deadline=None)

# ---------------------------------------------------------------------------------------------
# helpers (independent numpy references)
# ---------------------------------------------------------------------------------------------


def _unit(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    v = torch.randn(n, d, generator=g, dtype=torch.float64)
    return (v / v.norm(dim=1, keepdim=True)).float()


def _np_cos(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a = a.double().numpy()
    b = b.double().numpy()
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def _sparse_codes(n: int, k: int, p: float, g: torch.Generator) -> torch.Tensor:
    mask = torch.rand(n, k, generator=g) < p
    return torch.rand(n, k, generator=g) * mask


def _brute_force_mcc(cos: np.ndarray) -> float:
    a = np.abs(cos)
    if a.shape[0] > a.shape[1]:
        a = a.T
    small, big = a.shape
    best = max(sum(a[i, cols[i]] for i in range(small)) for cols in itertools.permutations(range(big), small))
    return best / small


def _naive_classification(codes, true_codes, true_dirs, W_dec):
    best = np.abs(_np_cos(true_dirs, W_dec)).argmax(axis=0)  # [m]
    c = codes.numpy()
    t = true_codes.numpy()
    p, r, f = [], [], []
    for j in range(c.shape[1]):
        lf = c[:, j] != 0
        gf = t[:, best[j]] > 0
        tp, fp, fn = np.sum(lf & gf), np.sum(lf & ~gf), np.sum(~lf & gf)
        pj = tp / (tp + fp) if tp + fp else 0.0
        rj = tp / (tp + fn) if tp + fn else 0.0
        p.append(pj)
        r.append(rj)
        f.append(2 * pj * rj / (pj + rj) if pj + rj else 0.0)
    return np.array(p), np.array(r), np.array(f)


def _naive_absorption(codes, true_codes, true_dirs, W_dec, parent, threshold):
    cos = _np_cos(true_dirs, W_dec)  # [F, m]
    match = np.abs(cos).argmax(axis=0)
    par = parent.numpy()
    c = codes.numpy()
    t = true_codes.numpy()
    per = {}
    for g in sorted(set(par[par >= 0].tolist())):
        children = np.nonzero(par == g)[0]
        j_g = cos[g].argmax()
        n_el = n_ab = 0
        for s in range(c.shape[0]):
            if not (t[s, g] > 0 and np.any(t[s, children] > 0)):
                continue
            n_el += 1
            if c[s, j_g] != 0:
                continue
            if any(c[s, j] != 0 and par[match[j]] == g and cos[g, j] >= threshold for j in range(c.shape[1])):
                n_ab += 1
        if n_el:
            per[g] = n_ab / n_el
    return per


class TinySAE:
    """A minimal ReLU SAE with the duck-typed interface score_sae needs (no .device/.dtype)."""

    def __init__(self, d: int, m: int, g: torch.Generator, dtype: torch.dtype = torch.float32):
        self.W_dec = _unit(m, d, g).to(dtype)
        self.W_enc = self.W_dec.T.clone()
        self.b_enc = 0.1 * torch.randn(m, generator=g, dtype=dtype)
        self.b_dec = 0.1 * torch.randn(d, generator=g, dtype=dtype)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.W_dec + self.b_dec


# ---------------------------------------------------------------------------------------------
# hand-worked cases
# ---------------------------------------------------------------------------------------------


def test_l0_hand():
    assert l0(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]])) == 1.0


def test_mse_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    x_hat = torch.tensor([[1.0, 0.0], [3.0, 5.0]])
    assert mse(x, x_hat) == pytest.approx((4 + 1) / 2)


def test_fve_hand():
    # mean (2, 0); E‖x‖² = 5; ‖E x‖² = 4 -> variance 1.
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    assert fve(x, torch.tensor([[2.0, 0.0], [2.0, 0.0]])) == pytest.approx(0.0)
    assert fve(x, torch.tensor([[1.5, 0.0], [3.0, 0.0]])) == pytest.approx(1 - 0.125)
    assert fve(x, x) == 1.0
    # Constant data: FVE is undefined -> NaN (SAELens would say 1.0 or 0.0).
    assert math.isnan(fve(torch.ones(3, 2), torch.zeros(3, 2)))


def test_shrinkage_hand_skips_zero_rows():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    x_hat = torch.tensor([[1.5, 2.0], [7.0, 7.0], [0.0, 2.0]])  # ratios 0.5, skipped, 2
    assert shrinkage(x, x_hat) == pytest.approx(1.25)
    assert math.isnan(shrinkage(torch.zeros(2, 2), torch.ones(2, 2)))


def test_relative_reconstruction_bias_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    x_hat = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    # E‖x̂‖² = 2.5, E[x·x̂] = 2.
    assert relative_reconstruction_bias(x, x_hat) == pytest.approx(1.25)
    assert relative_reconstruction_bias(x, 0.5 * x) == pytest.approx(0.5)


def test_dead_latents_hand_counts_negative_codes_as_alive():
    codes = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
    assert dead_latents(codes).tolist() == [True, False, False]


def test_cosine_matrix_hand_zero_rows_give_zero():
    true_dirs = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    W_dec = torch.tensor([[1.0, 1.0], [0.0, 0.0], [-3.0, 0.0]])
    s = 1 / math.sqrt(2)
    expected = torch.tensor([[s, 0.0, -1.0], [s, 0.0, 0.0], [0.0, 0.0, 0.0]])
    got = cosine_matrix(true_dirs, W_dec)
    assert got.shape == (3, 3)
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got, expected)


def test_mmcs_hand_uses_signed_cosine_and_both_directions():
    true_dirs = torch.eye(2)
    W_dec = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
    s = 1 / math.sqrt(2)
    # cos [F, m] = [[s, -1], [s, 0]]
    assert mmcs(true_dirs, W_dec, "true_to_learned") == pytest.approx(s)
    assert mmcs(true_dirs, W_dec, direction="learned_to_true") == pytest.approx((s + 0) / 2)


def test_mmcs_direction_is_required():
    with pytest.raises(TypeError):
        mmcs(torch.eye(2), torch.eye(2))  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="direction"):
        mmcs(torch.eye(2), torch.eye(2), "both")  # type: ignore[arg-type]


def test_mcc_hand_hungarian_beats_greedy():
    # |cos| [F, m] = [[0.9, 0.8], [0.4, 0.1]]: greedy takes 0.9 then 0.1 (mean 0.5); the
    # optimal one-to-one matching is 0.8 + 0.4 (mean 0.6).
    true_dirs = torch.eye(4)[:2]
    W_dec = torch.tensor([[0.9, 0.4, math.sqrt(0.03), 0.0], [-0.8, 0.1, 0.0, math.sqrt(0.35)]])
    assert mcc(true_dirs, W_dec) == pytest.approx(0.6, abs=1e-6)


def test_mcc_rectangular_divides_by_min():
    true_dirs = torch.tensor([[1.0, 0.0]])
    W_dec = torch.tensor([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])  # |cos| 0.6, 0, 1
    assert mcc(true_dirs, W_dec) == pytest.approx(1.0)
    assert mcc(W_dec, true_dirs) == pytest.approx(1.0)


def test_uniqueness_hand_uses_abs_cosine():
    true_dirs = torch.eye(3)
    W_dec = torch.tensor([[1.0, 0.1, 0.0], [-1.0, 0.2, 0.0], [0.0, 0.0, 1.0], [0.1, 1.0, 0]])
    # best |cos| matches: 0, 0, 2, 1 -> 3 distinct / 4 latents
    assert uniqueness(true_dirs, W_dec) == pytest.approx(0.75)


def test_latent_classification_hand():
    true_dirs = torch.eye(2)
    W_dec = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # latent 2 matches f0 by |cos|
    true_codes = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    codes = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    out = latent_classification(codes, true_codes, true_dirs, W_dec)
    # latent 0: TP 1, FP 1, FN 1; latent 1: perfect; latent 2: never fires -> 0, 0, 0
    torch.testing.assert_close(out["precision"], torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out["recall"], torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out["f1"], torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))
    assert out["f1_mean"] == pytest.approx(0.5)
    assert out["precision_mean"] == pytest.approx(0.5)
    assert out["recall_mean"] == pytest.approx(0.5)
    assert out["best_match"].tolist() == [0, 1, 0]


def _absorption_case():
    # f0 is the parent of f1 and f2.  Latent 0 = f0, latent 1 = (2 f1 + f0)/√5 (matched to f1,
    # cosine 1/√5 ≈ 0.447 with f0), latent 2 = f2 (cosine 0 with f0).
    true_dirs = torch.eye(3)
    W_dec = torch.tensor([[1.0, 0.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]]) / torch.tensor(
        [[1.0], [math.sqrt(5)], [1.0]]
    )
    parent = torch.tensor([-1, 0, 0])
    true_codes = torch.tensor(
        [
            [1.0, 0.0, 0.0],  # parent only: not eligible
            [1.0, 1.0, 0.0],  # child latent alone -> absorbed
            [1.0, 1.0, 0.0],  # parent latent fires -> not absorbed
            [1.0, 0.0, 1.0],  # only a latent with cos 0 with f0 -> not absorbed
            [1.0, 1.0, 0.0],  # nothing fires -> not absorbed
        ]
    )
    codes = torch.tensor(
        [
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [1.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [0.0, 0.0, 0.0],
        ]
    )
    return codes, true_codes, true_dirs, W_dec, parent


def test_absorption_hand():
    codes, true_codes, true_dirs, W_dec, parent = _absorption_case()
    res = absorption(codes, true_codes, true_dirs, W_dec, parent)
    assert res.score == pytest.approx(0.25)
    assert res.per_parent[0].item() == pytest.approx(0.25)
    assert torch.isnan(res.per_parent[1:]).all()
    assert res.n_eligible.tolist() == [4, 0, 0]
    assert res.n_absorbed.tolist() == [1, 0, 0]
    assert res.parent_latent.tolist() == [0, -1, -1]
    # The child latent's cosine with f0 (0.447) is below a 0.5 threshold -> no absorption.
    assert absorption(codes, true_codes, true_dirs, W_dec, parent, threshold=0.5).score == 0.0


def test_absorption_without_eligible_samples_is_nan():
    codes, true_codes, true_dirs, W_dec, parent = _absorption_case()
    true_codes = true_codes.clone()
    true_codes[:, 1:] = 0
    res = absorption(codes, true_codes, true_dirs, W_dec, parent)
    assert math.isnan(res.score)
    assert res.n_eligible.tolist() == [0, 0, 0]


def test_recovery_report_is_frozen_and_serialisable():
    g = torch.Generator().manual_seed(0)
    sae = TinySAE(6, 8, g)
    true_dirs = _unit(5, 6, g)
    tc = _sparse_codes(40, 5, 0.3, g)
    rep = score_sae(sae, tc @ true_dirs, tc, true_dirs)
    assert isinstance(rep, RecoveryReport)
    with pytest.raises(AttributeError):
        rep.mcc = 0.0  # type: ignore[misc]
    d = rep.to_dict()
    assert d["n_eval"] == 40 and d["absorption"] is None
    assert d["absorption_gap"] is None and d["hedging"] is None
    assert set(d) == {
        "l0", "fve", "mse", "shrinkage", "gamma", "dead", "n_eval", "mmcs_true_to_learned",
        "mmcs_learned_to_true", "mcc", "uniqueness", "precision", "recall", "f1", "absorption",
        "absorption_gap", "hedging",
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# property tests
# ---------------------------------------------------------------------------------------------

seeds = st.integers(0, 2**31 - 1)


@FAST
@given(seed=seeds, F=st.integers(1, 8), extra_d=st.integers(1, 4))
def test_true_dictionary_scores_one(seed, F, extra_d):
    g = torch.Generator().manual_seed(seed)
    true_dirs = _unit(F, F + extra_d, g)
    assert mcc(true_dirs, true_dirs) == pytest.approx(1.0, abs=1e-5)
    assert mmcs(true_dirs, true_dirs, "true_to_learned") == pytest.approx(1.0, abs=1e-5)
    assert mmcs(true_dirs, true_dirs, "learned_to_true") == pytest.approx(1.0, abs=1e-5)
    assert uniqueness(true_dirs, true_dirs) == 1.0


@FAST
@given(seed=seeds, F=st.integers(1, 7), m=st.integers(1, 7), d=st.integers(2, 6))
def test_invariant_to_latent_permutation_and_positive_rescaling(seed, F, m, d):
    g = torch.Generator().manual_seed(seed)
    true_dirs = torch.randn(F, d, generator=g)
    W_dec = torch.randn(m, d, generator=g)
    perm = torch.randperm(m, generator=g)
    scale = torch.rand(m, 1, generator=g) * 10 + 0.1
    W2 = (W_dec * scale)[perm]
    assert mcc(true_dirs, W2) == pytest.approx(mcc(true_dirs, W_dec), abs=1e-5)
    for direction in ("true_to_learned", "learned_to_true"):
        assert mmcs(true_dirs, W2, direction) == pytest.approx(mmcs(true_dirs, W_dec, direction), abs=1e-5)
    assert uniqueness(true_dirs, W2) == pytest.approx(uniqueness(true_dirs, W_dec))


@FAST
@given(seed=seeds, F=st.integers(1, 5), m=st.integers(1, 5), d=st.integers(2, 6))
def test_mcc_equals_brute_force(seed, F, m, d):
    g = torch.Generator().manual_seed(seed)
    true_dirs = torch.randn(F, d, generator=g)
    W_dec = torch.randn(m, d, generator=g)
    assert mcc(true_dirs, W_dec) == pytest.approx(_brute_force_mcc(_np_cos(true_dirs, W_dec)), abs=1e-6)


@FAST
@given(seed=seeds, n=st.integers(2, 50), d=st.integers(1, 8), shift=st.floats(-100, 100))
def test_fve_perfect_is_one_and_mean_prediction_is_zero(seed, n, d, shift):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + shift
    assert fve(x, x) == 1.0
    x_mean = x.mean(dim=0, keepdim=True).expand_as(x)
    assert fve(x, x_mean) == pytest.approx(0.0, abs=1e-9)
    # and against the literal formula in numpy
    x_hat = x + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    xn, hn = x.numpy(), x_hat.numpy()
    ref = 1 - np.mean(np.sum((xn - hn) ** 2, 1)) / (np.mean(np.sum(xn**2, 1)) - np.sum(np.mean(xn, 0) ** 2))
    assert fve(x, x_hat) == pytest.approx(ref, rel=1e-6, abs=1e-6)
    assert mse(x, x_hat) == pytest.approx(np.mean(np.sum((xn - hn) ** 2, 1)))


@FAST
@given(seed=seeds, n=st.integers(1, 40), F=st.integers(1, 8), p=st.floats(0.05, 0.9))
def test_f1_is_one_for_true_codes_and_dictionary(seed, n, F, p):
    g = torch.Generator().manual_seed(seed)
    true_dirs = _unit(F, F + 3, g)
    true_codes = _sparse_codes(n, F, p, g)
    true_codes[torch.arange(F) % n, torch.arange(F)] = 1.0  # every feature fires at least once
    out = latent_classification(true_codes, true_codes, true_dirs, true_dirs)
    assert out["f1_mean"] == 1.0
    assert out["precision_mean"] == 1.0 and out["recall_mean"] == 1.0


@FAST
@given(
    seed=seeds,
    n=st.integers(1, 30),
    F=st.integers(2, 7),
    m=st.integers(1, 7),
    chunk=st.integers(1, 8),
    threshold=st.sampled_from([0.0, 0.2, 0.5]),
)
def test_classification_and_absorption_match_naive_loops(seed, n, F, m, chunk, threshold):
    g = torch.Generator().manual_seed(seed)
    d = 3
    true_dirs = torch.randn(F, d, generator=g)
    W_dec = torch.randn(m, d, generator=g)
    parent = torch.full((F,), -1, dtype=torch.int64)
    for c in range(1, F):  # random forest: parent index smaller than the child's, or root
        pc = int(torch.randint(-1, c, (1,), generator=g))
        parent[c] = pc
    true_codes = _sparse_codes(n, F, 0.5, g)
    codes = _sparse_codes(n, m, 0.5, g) * torch.where(torch.rand(n, m, generator=g) < 0.2, -1, 1)

    p, r, f = _naive_classification(codes, true_codes, true_dirs, W_dec)
    out = latent_classification(codes, true_codes, true_dirs, W_dec, chunk_size=chunk)
    np.testing.assert_allclose(out["precision"].numpy(), p, atol=1e-12)
    np.testing.assert_allclose(out["recall"].numpy(), r, atol=1e-12)
    np.testing.assert_allclose(out["f1"].numpy(), f, atol=1e-12)
    assert out["f1_mean"] == pytest.approx(f.mean())

    ref = _naive_absorption(codes, true_codes, true_dirs, W_dec, parent, threshold)
    res = absorption(codes, true_codes, true_dirs, W_dec, parent, threshold, chunk_size=chunk)
    got = {i: v for i, v in enumerate(res.per_parent.tolist()) if not math.isnan(v)}
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k] == pytest.approx(ref[k])
    if ref:
        assert res.score == pytest.approx(np.mean(list(ref.values())))
    else:
        assert math.isnan(res.score)


@settings(max_examples=10, deadline=None)
@given(seed=seeds, batch_size=st.integers(1, 64))
def test_score_sae_matches_standalone_functions(seed, batch_size):
    g = torch.Generator().manual_seed(seed)
    n, F, m, d = 97, 10, 12, 6
    # float64 so that batching changes the SAE's own outputs by ~1e-16 only (in float32 a batch
    # of one vs a batch of 97 legitimately differs in the 7th digit).
    sae = TinySAE(d, m, g, dtype=torch.float64)
    true_dirs = _unit(F, d, g).double()
    true_codes = _sparse_codes(n, F, 0.3, g).double()
    parent = torch.tensor([-1, -1, 0, 0, 1, 1, 1, 2, -1, 8])
    x = true_codes @ true_dirs
    rep = score_sae(sae, x, true_codes, true_dirs, parent=parent, batch_size=batch_size, gap_min_samples=3)
    codes = sae.encode(x)
    x_hat = sae.decode(codes)
    cls = latent_classification(codes, true_codes, true_dirs, sae.W_dec)
    ab = absorption(codes, true_codes, true_dirs, sae.W_dec, parent)
    gap = absorption_gap(codes, true_codes, true_dirs, sae.W_dec, parent, min_samples=3)
    expected = {
        "l0": l0(codes),
        "fve": fve(x, x_hat),
        "mse": mse(x, x_hat),
        "shrinkage": shrinkage(x, x_hat),
        "gamma": relative_reconstruction_bias(x, x_hat),
        "dead": int(dead_latents(codes).sum()),
        "n_eval": n,
        "mmcs_true_to_learned": mmcs(true_dirs, sae.W_dec, "true_to_learned"),
        "mmcs_learned_to_true": mmcs(true_dirs, sae.W_dec, "learned_to_true"),
        "mcc": mcc(true_dirs, sae.W_dec),
        "uniqueness": uniqueness(true_dirs, sae.W_dec),
        "precision": cls["precision_mean"],
        "recall": cls["recall_mean"],
        "f1": cls["f1_mean"],
        "absorption": ab.score,
        "absorption_gap": gap.score,
        "hedging": hedging(true_dirs, sae.W_dec, parent).score,
    }
    got = rep.to_dict()
    for k, v in expected.items():
        if isinstance(v, float) and math.isnan(v):
            assert math.isnan(got[k]), k
        else:
            assert got[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k


# ---------------------------------------------------------------------------------------------
# agreement with SAELens
# ---------------------------------------------------------------------------------------------


class _ReplayGenerator:
    """Stands in for SAELens's ActivationGenerator: replays fixed true codes in order."""

    def __init__(self, true_codes: torch.Tensor):
        self.true_codes = true_codes
        self.i = 0

    def sample(self, batch_size: int) -> torch.Tensor:
        out = self.true_codes[self.i : self.i + batch_size]
        self.i += batch_size
        return out


def _saelens_setup(seed: int = 0, n: int = 600, F: int = 24, d: int = 16, m: int = 32):
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens.synthetic import FeatureDictionary

    torch.manual_seed(seed)
    sae = sae_lens.SAE.from_dict(sae_lens.StandardSAEConfig(d_in=d, d_sae=m).to_dict())
    with torch.no_grad():
        sae.b_enc.normal_(0.0, 0.3)  # spread firing rates so the metrics are not degenerate
        sae.b_dec.normal_(0.0, 0.1)
    fd = FeatureDictionary(F, d, bias=0.5, initializer=None, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    true_codes = _sparse_codes(n, F, 0.15, g)
    with torch.no_grad():
        x = fd(true_codes)
    return sae, fd, true_codes, x


def test_matches_saelens_functions():
    pytest.importorskip("sae_lens")
    from sae_lens.evals import ExplainedVarianceCalculator
    from sae_lens.synthetic import (
        ShrinkageCalculator,
        compute_classification_metrics,
        feature_uniqueness,
        mean_correlation_coefficient,
    )

    sae, fd, true_codes, x = _saelens_setup()
    true_dirs = fd.feature_vectors.detach()
    with torch.no_grad():
        W_dec = sae.W_dec.detach()
        codes = sae.encode(x)
        x_hat = sae.decode(codes)

    assert mcc(true_dirs, W_dec) == pytest.approx(mean_correlation_coefficient(W_dec, true_dirs), abs=1e-5)
    assert mcc(true_dirs, W_dec[:10]) == pytest.approx(mean_correlation_coefficient(W_dec[:10], true_dirs), abs=1e-5)
    assert uniqueness(true_dirs, W_dec) == pytest.approx(feature_uniqueness(W_dec, true_dirs))

    ref = compute_classification_metrics(codes, true_codes, W_dec, true_dirs)
    ours = latent_classification(codes, true_codes, true_dirs, W_dec)
    assert 0.05 < ref.f1_score < 0.95  # a non-trivial case
    assert ours["f1_mean"] == pytest.approx(ref.f1_score, abs=1e-5)
    assert ours["precision_mean"] == pytest.approx(ref.precision, abs=1e-5)
    assert ours["recall_mean"] == pytest.approx(ref.recall, abs=1e-5)

    ev = ExplainedVarianceCalculator()
    ev.add_batch(x_hat, x)
    assert fve(x, x_hat) == pytest.approx(ev.compute(), abs=1e-5)
    sh = ShrinkageCalculator()
    sh.add_batch(x_hat, x)
    assert shrinkage(x, x_hat) == pytest.approx(sh.compute(), abs=1e-5)


def test_score_sae_accepts_saelens_sae_untouched_and_matches_eval_sae_on_synthetic_data():
    pytest.importorskip("sae_lens")
    from sae_lens.synthetic import eval_sae_on_synthetic_data

    sae, fd, true_codes, x = _saelens_setup(seed=3)
    sae.train()
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    rep = score_sae(sae, x, true_codes, fd.feature_vectors.detach(), batch_size=128)
    assert sae.training  # not switched to eval mode
    for k, v in sae.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert sae.W_dec.grad is None

    ref = eval_sae_on_synthetic_data(sae, fd, _ReplayGenerator(true_codes), num_samples=x.shape[0], batch_size=100)
    assert rep.mcc == pytest.approx(ref.mcc, abs=1e-5)
    assert rep.f1 == pytest.approx(ref.classification.f1_score, abs=1e-5)
    assert rep.precision == pytest.approx(ref.classification.precision, abs=1e-5)
    assert rep.recall == pytest.approx(ref.classification.recall, abs=1e-5)
    assert rep.fve == pytest.approx(ref.explained_variance, abs=1e-5)
    assert rep.shrinkage == pytest.approx(ref.shrinkage, abs=1e-5)
    assert rep.l0 == pytest.approx(ref.sae_l0, abs=1e-9)
    assert rep.dead == ref.dead_latents
    assert rep.uniqueness == pytest.approx(ref.uniqueness)
    assert rep.n_eval == x.shape[0]


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

_E2 = torch.eye(2)
_C = torch.ones(3, 2)


def _nan_at(t: torch.Tensor, idx) -> torch.Tensor:
    t = t.clone().float()
    t[idx] = float("nan")
    return t


_BAD_CALLS = {
    "l0_1d": (lambda: l0(torch.zeros(3)), r"codes.*\(3,\)"),
    "mse_shape": (lambda: mse(torch.zeros(3, 2), torch.zeros(3, 3)), r"x_hat.*\(3, 3\)"),
    "fve_nan": (lambda: fve(torch.zeros(3, 2), _nan_at(torch.zeros(3, 2), (1, 0))), r"x_hat.*nan"),
    "fve_empty": (lambda: fve(torch.zeros(0, 2), torch.zeros(0, 2)), r"x.*\(0, 2\)"),
    "dead_3d": (lambda: dead_latents(torch.zeros(2, 2, 2)), r"codes.*\(2, 2, 2\)"),
    "cos_d": (lambda: cosine_matrix(torch.zeros(2, 3), torch.zeros(2, 4)), r"W_dec.*\(2, 4\)"),
    "cos_inf": (
        lambda: cosine_matrix(torch.tensor([[1.0, float("inf")]]), _E2),
        r"true_dirs.*inf",
    ),
    "mcc_3d": (lambda: mcc(_E2, torch.zeros(2, 2, 1)), r"W_dec.*\(2, 2, 1\)"),
    "mcc_empty": (lambda: mcc(_E2, torch.zeros(0, 2)), r"W_dec.*\(0, 2\)"),
    "mmcs_dir": (lambda: mmcs(_E2, _E2, "both"), r"direction.*'both'"),  # type: ignore[arg-type]
    "cls_n": (
        lambda: latent_classification(_C, torch.ones(4, 2), _E2, _E2),
        r"true_codes.*\(4, 2\)",
    ),
    "cls_m": (
        lambda: latent_classification(torch.ones(3, 3), _C, _E2, _E2),
        r"codes.*\(3, 3\).*W_dec",
    ),
    "cls_F": (
        lambda: latent_classification(_C, torch.ones(3, 3), _E2, _E2),
        r"true_codes.*\(3, 3\).*true_dirs",
    ),
    "cls_nan": (
        lambda: latent_classification(_nan_at(_C, (2, 1)), _C, _E2, _E2),
        r"codes.*\[2, 1\].*nan",
    ),
    "abs_parent_len": (
        lambda: absorption(_C, _C, _E2, _E2, torch.tensor([-1, 0, 0])),
        r"parent.*\(3,\)",
    ),
    "abs_parent_range": (
        lambda: absorption(_C, _C, _E2, _E2, torch.tensor([-1, 5])),
        r"parent\[1\] = 5",
    ),
    "abs_parent_self": (
        lambda: absorption(_C, _C, _E2, _E2, torch.tensor([0, -1])),
        r"parent\[0\] = 0",
    ),
    "abs_parent_float": (
        lambda: absorption(_C, _C, _E2, _E2, torch.tensor([-1.0, 0.0])),
        r"parent.*dtype",
    ),
    "abs_threshold": (
        lambda: absorption(_C, _C, _E2, _E2, torch.tensor([-1, 0]), threshold=float("nan")),
        r"threshold.*nan",
    ),
    "score_n": (
        lambda: score_sae(TinySAE(2, 2, torch.Generator()), _C, torch.ones(4, 2), _E2),
        r"true_codes.*\(4, 2\)",
    ),
    "score_batch": (
        lambda: score_sae(TinySAE(2, 2, torch.Generator()), _C, _C, _E2, batch_size=0),
        r"batch_size.*0",
    ),
    "score_no_wdec": (lambda: score_sae(object(), _C, _C, _E2), r"W_dec"),
    "score_d": (
        lambda: score_sae(TinySAE(2, 2, torch.Generator()), _C, _C, torch.eye(3)[:2]),
        r"true_dirs.*\(2, 3\)",
    ),
}


@pytest.mark.parametrize("case", sorted(_BAD_CALLS))
def test_bad_input_raises_value_error_naming_argument(case):
    call, pattern = _BAD_CALLS[case]
    with pytest.raises(ValueError, match=pattern):
        call()


def test_a_non_tensor_is_a_type_error_naming_argument():
    with pytest.raises(TypeError, match=r"^codes must be a torch.Tensor, got list"):
        l0([[1.0]])
