"""Tests of analysis.metrics.hierarchy (hedging, the per-edge absorption gap) against hand-worked cases and
plain Python loops over small hierarchies drawn with groundtruth's strategies."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from analysis.metrics.hierarchy import DEFAULT_GAP_MIN_SAMPLES, absorption_gap, hedging, hedging_degree
from analysis.metrics.recovery import score_sae
from groundtruth import SparseFeatureModel
from groundtruth import strategies as gts

FAST = settings(max_examples=20, deadline=None)

# ---------------------------------------------------------------------------------------------
# plain-loop references (numpy, float64)
# ---------------------------------------------------------------------------------------------


def _np_cos(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    return (a / np.where(na > 0, na, 1)) @ (b / np.where(nb > 0, nb, 1)).T


def _naive_gap(codes, true_codes, true_dirs, W_dec, parent):
    """{(g, c): (j_g, n_without, fired_without, n_with, fired_with)} by looping over samples."""
    cos = _np_cos(true_dirs, W_dec)
    par = parent.tolist()
    c, t = codes.numpy(), true_codes.numpy()
    out = {}
    for child, g in enumerate(par):
        if g < 0:
            continue
        j = int(np.argmax(cos[g]))
        counts = [0, 0, 0, 0]
        for s in range(c.shape[0]):
            if t[s, g] <= 0:
                continue
            k = 2 if t[s, child] > 0 else 0
            counts[k] += 1
            counts[k + 1] += int(c[s, j] != 0)
        out[(g, child)] = (j, *counts)
    return out


def _naive_hedging(true_dirs, W_dec, parent):
    """({g: ‖P ŵ‖ or None if untracked}, {(g, c): ŵ·u_c or None}) with an SVD basis of each family's span."""
    f = np.asarray(true_dirs, dtype=np.float64)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    w = np.asarray(W_dec, dtype=np.float64)
    w = w / np.where(np.linalg.norm(w, axis=1, keepdims=True) > 0, np.linalg.norm(w, axis=1, keepdims=True), 1)
    cos = _np_cos(true_dirs, W_dec)
    match = np.abs(cos).argmax(axis=0)
    par = parent.tolist()
    per_parent, per_edge = {}, {}
    for g in sorted({p for p in par if p >= 0}):
        j = int(np.argmax(cos[g]))
        tracked = match[j] == g
        us = []
        for child, pc in enumerate(par):
            if pc != g:
                continue
            r = f[child] - (f[child] @ f[g]) * f[g]
            u = r / np.linalg.norm(r) if np.linalg.norm(r) > 1e-6 else np.zeros_like(r)
            us.append(u)
            per_edge[(g, child)] = float(w[j] @ u) if tracked else None
        basis = scipy.linalg.orth(np.array(us).T, rcond=1e-9)  # [d, rank]
        per_parent[g] = float(np.linalg.norm(basis.T @ w[j])) if tracked else None
    return per_parent, per_edge


def _random_case(seed, model, n, m):
    """A drawn sparse model's sample (a fifth of its codes dropped, so the hierarchy is not always obeyed)
    with a random decoder and random signed codes."""
    g = torch.Generator().manual_seed(seed)
    batch = model.sample(n, g)
    true_codes = batch.codes.to_dense().double()
    true_codes *= torch.rand(true_codes.shape, generator=g) < 0.8  # some children on without their parent
    true_dirs = batch.directions.double()
    W_dec = torch.randn(m, true_dirs.shape[1], generator=g, dtype=torch.float64)
    codes = torch.rand(n, m, generator=g, dtype=torch.float64) * (torch.rand(n, m, generator=g) < 0.5)
    codes = codes * torch.where(torch.rand(n, m, generator=g) < 0.2, -1.0, 1.0)
    return codes, true_codes, true_dirs, W_dec, model.parent


_models = gts.sparse_feature_models(
    gts.sparse_feature_configs(d=st.integers(2, 6), n_features=st.integers(2, 12), hierarchy=gts.hierarchies(12))
)

# ---------------------------------------------------------------------------------------------
# hand-worked cases
# ---------------------------------------------------------------------------------------------


def _gap_case(parent_fires_with_child: bool):
    """f0 the parent of f1 and f2 (orthonormal), the true dictionary as decoder.  The parent's latent 0 fires
    whenever f0 is on without a child; with a child on it fires only if ``parent_fires_with_child``."""
    true_dirs = torch.eye(3)
    parent = torch.tensor([-1, 0, 0])
    true_codes = torch.tensor(
        [
            [1.0, 0.0, 0.0],
            [2.0, 0.0, 0.0],
            [1.0, 1.0, 0.0],
            [1.0, 0.0, 1.0],
            [1.0, 1.0, 0.0],
            [0.0, 0.0, 0.0],
        ]
    )
    codes = true_codes.clone()
    if not parent_fires_with_child:
        codes[(true_codes[:, 1:] > 0).any(1), 0] = 0.0
    return codes, true_codes, true_dirs, true_dirs.clone(), parent


def test_gap_is_one_under_complete_absorption():
    res = absorption_gap(*_gap_case(parent_fires_with_child=False), min_samples=1)
    assert res.parent.tolist() == [0, 0] and res.child.tolist() == [1, 2]
    assert res.parent_latent.tolist() == [0, 0]
    # Edge (0, 1): the parent is on in rows 0-4; child 1 is off in rows 0, 1, 3 (latent 0 fires in 0 and 1;
    # row 3 has child 2 on, so it is silent there too) and on in rows 2, 4.  Edge (0, 2): child 2 off in
    # rows 0, 1, 2, 4 (fires in 0, 1), on in row 3.
    assert res.n_without.tolist() == [3, 4] and res.fired_without.tolist() == [2, 2]
    assert res.n_with.tolist() == [2, 1] and res.fired_with.tolist() == [0, 0]
    np.testing.assert_allclose(res.gap.numpy(), [2 / 3, 1 / 2])
    # Restricted to samples where the *other* child is off, absorption is complete: gap exactly 1.
    codes, true_codes, true_dirs, W_dec, parent = _gap_case(parent_fires_with_child=False)
    keep = true_codes[:, 2] == 0
    res = absorption_gap(codes[keep], true_codes[keep], true_dirs, W_dec, parent, min_samples=1)
    assert res.gap[0].item() == 1.0 and res.recall_without[0].item() == 1.0 and res.recall_with[0].item() == 0.0
    assert math.isnan(res.gap[1].item()) and math.isnan(res.recall_with[1].item())  # child 2 never on
    assert res.n_scored == 1 and res.score == 1.0


def test_gap_is_zero_without_absorption():
    res = absorption_gap(*_gap_case(parent_fires_with_child=True), min_samples=1)
    assert res.gap.tolist() == [0.0, 0.0] and res.score == 0.0 and res.n_scored == 2
    assert res.recall_with.tolist() == [1.0, 1.0]


def test_gap_min_samples_leaves_thin_edges_out_of_the_score():
    args = _gap_case(parent_fires_with_child=False)
    res = absorption_gap(*args, min_samples=2)  # edge (0, 2) has one sample with the child on
    assert res.n_scored == 1 and res.score == pytest.approx(2 / 3)
    assert res.gap[1].item() == pytest.approx(1 / 2)  # still reported
    res = absorption_gap(*args)
    assert res.min_samples == DEFAULT_GAP_MIN_SAMPLES and res.n_scored == 0 and math.isnan(res.score)


def test_hedging_hand():
    f = torch.eye(4)
    parent = torch.tensor([-1, 0, 0, -1])
    clean = hedging(f, f, parent)
    assert clean.score == 0.0 and clean.per_edge.tolist() == [0.0, 0.0]
    assert clean.tracked.tolist() == [True, False, False, False] and clean.child_tracked.tolist() == [True, True]
    # The parent's latent leans towards child 1: (f0 + f1)/√2, 1/√2 along u_1 = f1; child 1 has no latent.
    W = torch.stack([f[0] + f[1], f[2], f[3]])
    res = hedging(f, W, parent)
    assert res.parent_latent.tolist() == [0, -1, -1, -1]
    assert res.per_edge.tolist() == pytest.approx([1 / math.sqrt(2), 0.0])
    assert res.child_tracked.tolist() == [False, True]
    assert res.score == pytest.approx(1 / math.sqrt(2))
    # Towards both children: ŵ = (2, 1, 1, 0)/√6 has sqrt(2/6) of its norm in their span.
    res = hedging(f, torch.stack([2 * f[0] + f[1] + f[2], f[3]]), parent)
    assert res.per_parent[0].item() == pytest.approx(math.sqrt(1 / 3))
    assert res.per_edge.tolist() == pytest.approx([1 / math.sqrt(6)] * 2)
    # A component outside the family's span (f3) is not hedging towards the children.
    res = hedging(f, torch.stack([f[0] + f[3], f[1], f[2]]), parent)
    assert res.score == pytest.approx(0.0, abs=1e-12)


def test_hedging_measures_the_child_off_its_parent():
    # Child 1 overlaps its parent (cos 0.6): the parent's own latent f0 is not hedged, and u_1 = f1's part off f0.
    f0 = torch.tensor([1.0, 0.0, 0.0])
    f1 = torch.tensor([0.6, 0.8, 0.0])
    true_dirs = torch.stack([f0, f1, torch.tensor([0.0, 0.0, 1.0])])
    parent = torch.tensor([-1, 0, -1])
    assert hedging(true_dirs, true_dirs, parent).score == pytest.approx(0.0, abs=1e-12)
    w = f0 + 0.3 * torch.tensor([0.0, 1.0, 0.0])  # cos 0.96 with f0, 0.80 with f1: tracks the parent
    res = hedging(true_dirs, torch.stack([w, f1, true_dirs[2]]), parent)
    assert res.tracked[0] and res.score == pytest.approx(0.3 / math.sqrt(1.09))


def test_untracked_parent_is_nan():
    # The parent's nearest latent is the child's (f1 + 0.9 f0): best match f1, so the parent has no latent.
    f = torch.eye(3)
    parent = torch.tensor([-1, 0, -1])
    res = hedging(f, torch.stack([f[1] + 0.9 * f[0], f[2]]), parent)
    assert res.tracked.tolist() == [False, False, False]
    assert math.isnan(res.score) and math.isnan(res.per_parent[0].item()) and math.isnan(res.per_edge[0].item())


def test_no_edges():
    f = torch.eye(2)
    parent = torch.tensor([-1, -1])
    res = absorption_gap(f, f, f, f, parent)
    assert res.gap.numel() == 0 and res.n_scored == 0 and math.isnan(res.score)
    assert math.isnan(hedging(f, f, parent).score)


def test_hedging_degree_hand():
    # One latent e0 moves to (e0 + e1/2)/|.| when a new latent e1 arrives, in 4 dimensions: the change
    # (-0.106, 0.447, 0, 0) has 0.447 in the new span; a random line would catch E|P v| = Γ(1)Γ(2)/(Γ(1/2)Γ(5/2))
    # of its norm.
    e = torch.eye(4)
    moved = e[0] + 0.5 * e[1]
    res = hedging_degree(e[:1], torch.stack([moved, e[1]]))
    change = moved / moved.norm() - e[0]
    c = math.gamma(1) * math.gamma(2) / (math.gamma(0.5) * math.gamma(2.5))
    assert res.in_new_span == pytest.approx(0.5 / math.sqrt(1.25))
    assert res.mean_change == pytest.approx(float(change.norm()))
    assert res.baseline == pytest.approx(c * float(change.norm()))
    assert res.score == pytest.approx((res.in_new_span - res.baseline) / (1 - res.baseline))
    everything = hedging_degree(e[:1], torch.cat([moved[None], e]))  # new latents spanning R^4: nothing to tell
    assert everything.in_new_span == pytest.approx(everything.mean_change) and everything.score == pytest.approx(0)
    unchanged = hedging_degree(e[:2], torch.stack([e[0], 3 * e[1], e[2]]))  # row norms do not matter
    assert unchanged.score == 0.0 and unchanged.in_new_span == 0.0 and unchanged.baseline == 0.0


@settings(max_examples=5, deadline=None)
@given(seed=gts.seeds(), n=st.integers(1, 4), k=st.integers(1, 3), d=st.integers(5, 8))
def test_hedging_degree_baseline_is_the_random_subspace_mean(seed, n, k, d):
    """The closed-form chance level against the authors' procedure: Gaussian stand-ins for the new latents."""
    rng = np.random.default_rng(seed)
    control = rng.normal(size=(n, d))
    extended = np.concatenate([control + 0.3 * rng.normal(size=(n, d)), rng.normal(size=(k, d))])
    res = hedging_degree(torch.tensor(control), torch.tensor(extended))
    unit = extended[:n] / np.linalg.norm(extended[:n], axis=1, keepdims=True)
    delta = unit - control / np.linalg.norm(control, axis=1, keepdims=True)
    draws = []
    for _ in range(10000):
        q, _ = np.linalg.qr(rng.normal(size=(d, k)))
        draws.append(np.linalg.norm(delta @ q, axis=1).mean())
    assert res.baseline == pytest.approx(np.mean(draws), rel=0.03)
    q, _ = np.linalg.qr(extended[n:].T)
    assert res.in_new_span == pytest.approx(np.linalg.norm(delta @ q, axis=1).mean())


# ---------------------------------------------------------------------------------------------
# against plain loops on drawn hierarchies
# ---------------------------------------------------------------------------------------------


@FAST
@given(model=_models, seed=gts.seeds(), n=st.integers(1, 40), m=st.integers(1, 8), chunk=st.integers(1, 9))
def test_gap_matches_naive_loop(model, seed, n, m, chunk):
    codes, true_codes, true_dirs, W_dec, parent = _random_case(seed, model, n, m)
    ref = _naive_gap(codes, true_codes, true_dirs, W_dec, parent)
    res = absorption_gap(codes, true_codes, true_dirs, W_dec, parent, min_samples=2, chunk_size=chunk)
    got = zip(
        res.parent.tolist(), res.child.tolist(), res.parent_latent.tolist(), res.n_without.tolist(),
        res.fired_without.tolist(), res.n_with.tolist(), res.fired_with.tolist(), strict=True,
    )  # fmt: skip
    assert {(g, c): rest for g, c, *rest in got} == {k: list(v) for k, v in ref.items()}
    gaps = []
    for i, (_, n_wo, f_wo, n_w, f_w) in enumerate(ref.values()):
        expected = f_wo / n_wo - f_w / n_w if n_wo and n_w else math.nan
        if math.isnan(expected):
            assert math.isnan(res.gap[i].item())
        else:
            assert res.gap[i].item() == pytest.approx(expected)
        if n_wo >= 2 and n_w >= 2:
            gaps.append(expected)
    assert res.n_scored == len(gaps)
    assert res.score == pytest.approx(np.mean(gaps)) if gaps else math.isnan(res.score)


@FAST
@given(model=_models, seed=gts.seeds(), m=st.integers(1, 8))
def test_hedging_matches_naive_loop(model, seed, m):
    _, _, true_dirs, W_dec, parent = _random_case(seed, model, 1, m)
    ref_parent, ref_edge = _naive_hedging(true_dirs, W_dec, parent)
    res = hedging(true_dirs, W_dec, parent)
    for g, v in ref_parent.items():
        if v is None:
            assert math.isnan(res.per_parent[g].item()) and not res.tracked[g]
        else:
            assert res.per_parent[g].item() == pytest.approx(v, abs=1e-9) and res.tracked[g]
    assert torch.isnan(res.per_parent[[i for i in range(len(parent)) if i not in ref_parent]]).all()
    for i, (g, c) in enumerate(zip(res.parent.tolist(), res.child.tolist(), strict=True)):
        v = ref_edge[(g, c)]
        assert math.isnan(res.per_edge[i].item()) if v is None else res.per_edge[i].item() == pytest.approx(v)
    tracked = [v for v in ref_parent.values() if v is not None]
    assert res.score == pytest.approx(np.mean(tracked)) if tracked else math.isnan(res.score)
    assert ((res.per_parent[res.tracked] >= 0) & (res.per_parent[res.tracked] <= 1)).all()


@FAST
@given(model=_models, seed=gts.seeds(), n=st.integers(1, 40))
def test_true_dictionary_has_no_gap_and_no_hedging(model: SparseFeatureModel, seed, n):
    batch = model.sample(n, torch.Generator().manual_seed(seed))
    overlap = (batch.directions @ batch.directions.T - 2 * torch.eye(len(model.parent))).max()
    assume(overlap < 0.99)  # no two features (nearly) the same direction, so each is its own best match
    codes = batch.codes.to_dense()
    gap = absorption_gap(codes, codes, batch.directions, batch.directions, model.parent, min_samples=1)
    defined = ~torch.isnan(gap.gap)
    assert (gap.gap[defined] == 0).all()
    assert (gap.recall_without[~torch.isnan(gap.recall_without)] == 1).all()
    res = hedging(batch.directions, batch.directions, model.parent)
    assert res.tracked.sum() == (torch.bincount(gap.parent, minlength=len(model.parent)) > 0).sum()
    assert torch.nan_to_num(res.per_parent).abs().max() < 1e-6


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

_E = torch.eye(3)
_P = torch.tensor([-1, 0, 0])


class _Identity:
    W_dec = _E

    def encode(self, x):
        return x

    def decode(self, codes):
        return codes


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: absorption_gap(_E, _E, _E, _E, _P, min_samples=0), "min_samples"),
        (lambda: absorption_gap(_E, _E, _E, _E, torch.tensor([-1, 0])), "parent"),
        (lambda: absorption_gap(_E, _E, _E, _E, torch.tensor([-1, 3, 0])), r"parent\[1\] = 3"),
        (lambda: absorption_gap(_E[:2], _E, _E, _E, _P), "codes"),
        (lambda: absorption_gap(_E, _E, _E, _E[:, :2], _P), "W_dec"),
        (lambda: absorption_gap(_E, _E, _E, _E, _P.float()), "parent"),
        (lambda: hedging(_E, _E, torch.tensor([-1, 1, 0])), r"parent\[1\] = 1"),
        (lambda: hedging(_E, torch.full((3, 3), math.nan), _P), "W_dec"),
        (lambda: hedging(_E, _E[:, :2], _P), "W_dec"),
        (lambda: hedging_degree(_E, _E[:2]), "W_dec_extended"),
        (lambda: hedging_degree(_E[:, :0].T, _E), "W_dec_control"),
        (lambda: hedging_degree(_E, torch.full((4, 3), math.nan)), "W_dec_extended"),
        (lambda: score_sae(_Identity(), _E, _E, _E, parent=_P, gap_min_samples=0), "gap_min_samples"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
