"""Sparse feature models against independent references: binomial firing rates, a brute-force dense
Gaussian-copula sampler, closed-form bivariate normal co-firing, brute-force hierarchy layouts and
mutual exclusion, exact reconstruction, reproducibility, and argument checks."""

from __future__ import annotations

import itertools
import json
import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from groundtruth import (
    PRESETS,
    Constant,
    ConstantMagnitude,
    Directions,
    FoldedNormal,
    Geometric,
    Hierarchy,
    Linear,
    LowRank,
    RandomCorrelation,
    SparseFeatureConfig,
    SparseFeatureModel,
    Uniform,
    Zipf,
    preset,
)
from groundtruth.directions import largest_overlap, welch_bound
from groundtruth.seeding import child_seed

seeds = st.integers(0, 2**31 - 1)
ALPHA = 1e-7  # per-assertion false-alarm rate of the statistical checks


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def binomial_pvalues(counts, n: int, p) -> np.ndarray:
    """Exact two-sided (doubled smaller tail) binomial p-values of ``counts`` successes in ``n``."""
    counts, p = np.asarray(counts), np.asarray(p, dtype=np.float64)
    lower = stats.binom.cdf(counts, n, p)
    upper = stats.binom.sf(counts - 1, n, p)
    return np.minimum(1.0, 2 * np.minimum(lower, upper))


def assert_rates(active: np.ndarray, p, alpha: float = ALPHA) -> None:
    """Per-feature firing counts consistent with Binomial(n, p_i) (Bonferroni over features)."""
    n = active.shape[0]
    pv = binomial_pvalues(active.sum(0), n, p)
    worst = int(np.argmin(pv))
    assert pv.min() > alpha / len(pv), (
        f"feature {worst}: rate {active[:, worst].mean():.5f} vs p {np.asarray(p)[worst]:.5f} (p-value {pv[worst]:.2e})"
    )


def assert_codes_well_formed(batch, n: int, n_features: int) -> None:
    codes = batch.codes
    assert codes.shape == (n, n_features)
    keys = codes.rows * n_features + codes.cols
    assert (keys[1:] > keys[:-1]).all(), "codes must be sorted by (row, col) without duplicates"
    assert ((codes.rows >= 0) & (codes.rows < n) & (codes.cols >= 0) & (codes.cols < n_features)).all()
    assert (codes.values > 0).all()
    assert torch.equal(codes.active(), codes.to_dense() > 0)
    assert codes.l0() == pytest.approx(codes.rows.numel() / n)


def dense_copula_reference(u: np.ndarray, p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Brute-force low-rank Gaussian copula: ``z = w Uᵀ + s η``, fire where ``z > Φ⁻¹(1 - p)``."""
    s = np.sqrt(1 - (u * u).sum(1))
    z = rng.standard_normal((n, u.shape[1])) @ u.T + s * rng.standard_normal((n, u.shape[0]))
    return z > stats.norm.isf(p)


def bivariate_cofire(p_i: float, p_j: float, rho: float) -> float:
    """P(z_i > tau_i, z_j > tau_j) for standard normals with correlation rho (closed form via scipy)."""
    a, b = stats.norm.isf(p_i), stats.norm.isf(p_j)
    return float(stats.multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).cdf([-a, -b]))


def model_factor(cfg: SparseFeatureConfig) -> np.ndarray:
    """The low-rank factor U of a model, rebuilt from the model's named seed stream ``"correlation"``."""
    return cfg.correlation.factor(
        cfg.n_features, torch.Generator().manual_seed(child_seed(cfg.seed, "correlation"))
    ).numpy()


def bfs_parents(n_roots: int, branching: int, depth: int, n_features: int) -> list[int]:
    """Brute-force breadth-first forest layout: roots first, then each level's children in order."""
    parent = [-1] * n_features
    frontier, next_id = list(range(n_roots)), n_roots
    for _ in range(depth):
        new = []
        for node in frontier:
            for _ in range(branching):
                parent[next_id] = node
                new.append(next_id)
                next_id += 1
        frontier = new
    return parent


# ---------------------------------------------------------------------------------------------------
# Firing rates


@settings(max_examples=10, deadline=None)
@given(seed=seeds, start=st.floats(0.0, 1.0), end=st.floats(0.0, 0.3), n_features=st.integers(1, 40))
def test_independent_firing_rates_match_p(seed, start, end, n_features):
    cfg = SparseFeatureConfig(d=3, n_features=n_features, firing=Linear(start, end), seed=seed % 1000)
    model = SparseFeatureModel(cfg)
    p = Linear(start, end).probabilities(n_features)
    np.testing.assert_allclose(model.probabilities.numpy(), p)
    n = 3000
    batch = model.sample(n, gen(seed))
    assert_codes_well_formed(batch, n, n_features)
    active = batch.codes.active().numpy()
    assert_rates(active, p)
    # p = 1 always fires, p = 0 never does
    assert active[:, p == 1.0].all()
    assert not active[:, p == 0.0].any()
    sd = math.sqrt((p * (1 - p)).sum() / n)
    assert abs(batch.codes.l0() - p.sum()) <= 5.5 * sd + 1e-9


def test_independent_firing_has_no_cofiring_structure():
    cfg = SparseFeatureConfig(d=3, n_features=4, firing=Constant(0.3))
    active = SparseFeatureModel(cfg).sample(20000, gen(5)).codes.active().numpy()
    both = (active[:, :, None] & active[:, None, :]).sum(0)
    for i, j in itertools.combinations(range(4), 2):
        assert binomial_pvalues(both[i, j], 20000, 0.09) > ALPHA


@settings(max_examples=6, deadline=None)
@given(seed=seeds, rank=st.integers(1, 3), scale=st.sampled_from([0.3, 1.0, 5.0]))
def test_low_rank_copula_matches_dense_reference(seed, rank, scale):
    # 70 features: three thinning blocks of 32, the last one padded; p spans 0.9 down to 0.002.
    n_features, n = 70, 4000
    cfg = SparseFeatureConfig(
        d=3, n_features=n_features, firing=Linear(0.9, 0.002), correlation=LowRank(rank, scale), seed=seed % 997
    )
    model = SparseFeatureModel(cfg)
    p = model.probabilities.numpy()
    batch = model.sample(n, gen(seed))
    assert_codes_well_formed(batch, n, n_features)
    got = batch.codes.active().numpy()
    ref = dense_copula_reference(model_factor(cfg), p, n, np.random.default_rng(seed))

    # Marginals are exactly Bernoulli(p_i), whatever the correlation.
    assert_rates(got, p)
    assert_rates(ref, p)
    # Mean L0 is sum(p); its spread (inflated by the correlation) matches the reference's.
    l0_got, l0_ref = got.sum(1), ref.sum(1)
    assert abs(l0_got.mean() - p.sum()) <= 5.5 * l0_ref.std() / math.sqrt(n)
    assert stats.ks_2samp(l0_got, l0_ref).pvalue > 1e-6
    assert stats.levene(l0_got, l0_ref).pvalue > 1e-6
    # Joint firing pattern of the three most frequent features: a 2 x 8 contingency table.
    pattern = lambda a: a[:, 0] * 4 + a[:, 1] * 2 + a[:, 2]  # noqa: E731
    table = np.stack([np.bincount(pattern(got), minlength=8), np.bincount(pattern(ref), minlength=8)])
    table = table[:, table.sum(0) > 0]
    if table.shape[1] > 1:
        assert stats.chi2_contingency(table).pvalue > 1e-6
    # Pairwise co-firing among the ten most frequent features: two-proportion z-tests.
    top = slice(0, 10)
    co_got = (got[:, top, None] & got[:, None, top]).mean(0)
    co_ref = (ref[:, top, None] & ref[:, None, top]).mean(0)
    pooled = (co_got + co_ref) / 2
    se = np.sqrt(np.maximum(pooled * (1 - pooled), 1e-12) * 2 / n)
    assert (np.abs(co_got - co_ref) / se).max() < 6.0


@settings(max_examples=50, deadline=None)
@given(c=st.floats(-50, 50, allow_nan=False))
def test_block_bound_is_an_upper_bound(c):
    from groundtruth.correlation import _block_bound

    hazard, q = _block_bound(torch.tensor([c], dtype=torch.float32))
    exact = torch.tensor([c], dtype=torch.float32).double()
    # Below the grid the hazard exceeds 1, which sends the block to the dense path (bound 1).
    if c < -1:
        assert float(hazard[0]) > 1.0
        return
    # Thinning is exact only if the tabulated bound is never below the true block probability.
    assert float(q[0]) >= float(torch.special.ndtr(-exact)[0])
    assert float(hazard[0]) >= float(-torch.special.log_ndtr(exact)[0])
    # Loose by at most one grid step of 1/64 inside the grid.
    if -1 <= c <= 12:
        assert float(q[0]) <= float(torch.special.ndtr(-(exact - 1 / 64))[0]) + 1e-15


def test_poisson_cells_counts_are_poisson():
    from groundtruth.correlation import _poisson_cells

    rates = torch.tensor([0.5, 0.0, 2.0, 0.1, 1.0], dtype=torch.float64)
    g = gen(3)
    counts = np.zeros((4000, rates.numel()), dtype=np.int64)
    for i in range(counts.shape[0]):
        cell, offset = _poisson_cells(rates.cumsum(0), g)
        assert bool((offset >= 0).all()) and bool((offset < rates.index_select(0, cell)).all())
        assert bool((cell[1:] >= cell[:-1]).all())  # drawn in increasing order
        counts[i] = np.bincount(cell.numpy(), minlength=rates.numel())
    for j, rate in enumerate(rates.tolist()):
        observed = np.bincount(counts[:, j], minlength=6)[:6]
        expected = stats.poisson.pmf(np.arange(6), rate) * counts.shape[0]
        keep = expected > 5
        if rate == 0:
            assert counts[:, j].sum() == 0
        else:
            scaled = expected[keep] * observed[keep].sum() / expected[keep].sum()
            assert stats.chisquare(observed[keep], scaled).pvalue > 1e-6


def test_low_rank_copula_cofiring_sign():
    # Rank 1 with a huge scale: every row is shrunk to ±sqrt(0.99), so C_ij = ±0.99.
    cfg = SparseFeatureConfig(d=2, n_features=6, firing=Constant(0.2), correlation=LowRank(1, 50.0), seed=11)
    u = model_factor(cfg)[:, 0]
    assert np.allclose(np.abs(u), math.sqrt(0.99))
    sign = np.sign(u)
    assert (sign > 0).any() and (sign < 0).any(), "seed chosen so that both signs occur"
    n = 4000
    active = SparseFeatureModel(cfg).sample(n, gen(3)).codes.active().numpy()
    assert_rates(active, np.full(6, 0.2))
    for i, j in itertools.combinations(range(6), 2):
        rho = float(u[i] * u[j])
        expected = bivariate_cofire(0.2, 0.2, rho)
        rate = (active[:, i] & active[:, j]).mean()
        assert abs(rate - expected) < 5 * math.sqrt(max(expected * (1 - expected), 1e-4) / n) + 2e-3
        if sign[i] == sign[j]:
            assert rate > 0.04 + 0.1  # far above independence (0.2 * 0.2)
        else:
            assert rate < 0.04 - 0.03  # far below it


def test_full_copula_from_correlation_matrix_matches_closed_form():
    c = np.array([[1.0, 0.7, -0.6], [0.7, 1.0, -0.5], [-0.6, -0.5, 1.0]])
    assert np.linalg.eigvalsh(c).min() > 0
    cfg = SparseFeatureConfig(d=4, n_features=3, firing=Linear(0.3, 0.1))
    model = SparseFeatureModel(cfg, correlation_matrix=torch.tensor(c))
    p = np.array([0.3, 0.2, 0.1])
    n = 8000
    active = model.sample(n, gen(0)).codes.active().numpy()
    assert_rates(active, p)
    for i, j in itertools.combinations(range(3), 2):
        expected = bivariate_cofire(p[i], p[j], c[i, j])
        rate = (active[:, i] & active[:, j]).mean()
        assert abs(rate - expected) < 5 * math.sqrt(expected * (1 - expected) / n) + 1e-3
        if c[i, j] > 0:
            assert rate > p[i] * p[j] + 0.03
        else:
            assert rate < p[i] * p[j] - 0.01
    # All three at once: a trivariate normal orthant probability.
    tau = stats.norm.isf(p)
    flip = np.diag([-1.0, -1.0, -1.0])
    triple = stats.multivariate_normal(mean=np.zeros(3), cov=flip @ c @ flip).cdf(-tau)
    assert binomial_pvalues(active.all(1).sum(), n, triple) > ALPHA


def test_random_correlation_keeps_marginals_and_matches_closed_form():
    cfg = SparseFeatureConfig(d=4, n_features=5, firing=Linear(0.4, 0.1), correlation=RandomCorrelation(0.9), seed=4)
    c = cfg.correlation.matrix(5, torch.Generator().manual_seed(child_seed(cfg.seed, "correlation"))).numpy()
    assert np.allclose(np.diag(c), 1.0) and np.linalg.eigvalsh(c).min() > -1e-9
    model = SparseFeatureModel(cfg)
    p = model.probabilities.numpy()
    n = 8000
    active = model.sample(n, gen(1)).codes.active().numpy()
    assert_rates(active, p)
    for i, j in itertools.combinations(range(5), 2):
        expected = bivariate_cofire(p[i], p[j], c[i, j])
        assert binomial_pvalues((active[:, i] & active[:, j]).sum(), n, expected) > ALPHA / 10


# ---------------------------------------------------------------------------------------------------
# Hierarchy


@st.composite
def hierarchical_configs(draw):
    spec = Hierarchy(
        n_roots=draw(st.integers(1, 3)),
        branching=draw(st.integers(1, 3)),
        depth=draw(st.integers(1, 3)),
        mutually_exclusive=draw(st.booleans()),
        scale_children=draw(st.booleans()),
        compensate=draw(st.booleans()),
    )
    firing = draw(st.sampled_from([Constant(0.5), Linear(0.9, 0.2), Zipf(1.0, 0.05, 0.8)]))
    correlation = draw(st.sampled_from([None, LowRank(2, 0.8), LowRank(1, 5.0), RandomCorrelation(0.7)]))
    magnitude = draw(st.sampled_from([Uniform(0.5, 2.0), FoldedNormal(3.0, 1.0, 0.5, 0.5), ConstantMagnitude(2.0)]))
    n_features = spec.n_nodes + draw(st.integers(0, 5))
    return SparseFeatureConfig(
        d=5,
        n_features=n_features,
        firing=firing,
        magnitude=magnitude,
        correlation=correlation,
        hierarchy=spec,
        seed=draw(st.integers(0, 10_000)),
    )


@settings(max_examples=20, deadline=None)
@given(cfg=hierarchical_configs(), seed=seeds, full=st.booleans())
def test_hierarchy_is_never_violated(cfg, seed, full):
    spec, n_features = cfg.hierarchy, cfg.n_features
    matrix = None
    if full:  # a user-supplied correlation matrix (FullFiring) instead of the config's
        g = torch.randn(n_features, n_features, generator=gen(seed), dtype=torch.float64)
        s = g @ g.T + n_features * torch.eye(n_features, dtype=torch.float64)
        matrix = s / torch.outer(s.diagonal().sqrt(), s.diagonal().sqrt())
    model = SparseFeatureModel(cfg, correlation_matrix=matrix)
    parent = bfs_parents(spec.n_roots, spec.branching, spec.depth, n_features)
    assert model.parent.tolist() == parent
    n = 400
    batch = model.sample(n, gen(seed))
    assert_codes_well_formed(batch, n, n_features)
    active = batch.codes.active()
    children = [i for i in range(n_features) if parent[i] >= 0]
    par = torch.tensor([parent[i] for i in children], dtype=torch.int64)
    assert not (active[:, children] & ~active[:, par]).any(), "a child fired without its parent"
    if spec.mutually_exclusive:
        for j in set(parent) - {-1}:
            kids = [i for i in children if parent[i] == j]
            assert active[:, kids].sum(1).max() <= 1, f"two children of {j} fired together"


def test_hierarchy_layout_is_breadth_first():
    cfg = SparseFeatureConfig(d=2, n_features=15, hierarchy=Hierarchy(n_roots=2, branching=2, depth=2))
    assert SparseFeatureModel(cfg).parent.tolist() == [-1, -1, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, -1]
    no_tree = SparseFeatureModel(SparseFeatureConfig(d=2, n_features=3))
    assert no_tree.parent.tolist() == [-1, -1, -1]


def test_children_fire_with_conditional_probability():
    # Independent firing, no compensation: P(child) = P(parent) * p_child, down the tree.
    cfg = SparseFeatureConfig(d=2, n_features=9, firing=Linear(0.8, 0.4), hierarchy=Hierarchy(1, 2, 2))
    model = SparseFeatureModel(cfg)
    p = Linear(0.8, 0.4).probabilities(9)
    parent = bfs_parents(1, 2, 2, 9)
    marginal = p.copy()
    for i in range(9):
        if parent[i] >= 0:
            marginal[i] = marginal[parent[i]] * p[i]
    n = 8000
    active = model.sample(n, gen(0)).codes.active().numpy()
    assert_rates(active, marginal)


@pytest.mark.parametrize("kind", ["low-rank", "full"])
def test_children_share_the_copula_with_their_parents(kind):
    # A child fires when its parent fires and its own copula variable clears its threshold, drawn from
    # the same per-sample state: P(child) = P(z_parent > tau_parent, z_child > tau_child).
    spec = Hierarchy(n_roots=2, branching=2, depth=1)
    cfg = SparseFeatureConfig(d=2, n_features=6, firing=Constant(0.4), hierarchy=spec, seed=11)
    if kind == "low-rank":
        cfg = cfg.replace(correlation=LowRank(1, 50.0))
        u = model_factor(cfg)
        c = u @ u.T
        np.fill_diagonal(c, 1.0)
        model = SparseFeatureModel(cfg)
    else:
        c = np.array(
            [
                [1.0, 0.0, 0.9, -0.8, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0, 0.8, -0.9],
                [0.9, 0.0, 1.0, -0.6, 0.0, 0.0],
                [-0.8, 0.0, -0.6, 1.0, 0.0, 0.0],
                [0.0, 0.8, 0.0, 0.0, 1.0, -0.6],
                [0.0, -0.9, 0.0, 0.0, -0.6, 1.0],
            ]
        )
        assert np.linalg.eigvalsh(c).min() > 0
        model = SparseFeatureModel(cfg, correlation_matrix=torch.tensor(c))
    parent = bfs_parents(2, 2, 1, 6)
    assert parent == [-1, -1, 0, 0, 1, 1]
    n = 6000
    active = model.sample(n, gen(8)).codes.active().numpy()
    expected = np.array([0.4 if parent[i] < 0 else bivariate_cofire(0.4, 0.4, c[i, parent[i]]) for i in range(6)])
    assert (np.abs(expected[2:] - 0.16) > 0.1).all(), "every child strongly (anti-)correlated with its parent"
    assert_rates(active, expected, alpha=1e-6)


def test_compensation_restores_the_schedule_rates():
    # Decreasing p, so every child is rarer than its parent: p_child / p_parent <= 1 and, with
    # independent firing, the compensated child's marginal rate is exactly the schedule's p.
    spec = Hierarchy(n_roots=2, branching=2, depth=2, compensate=True)
    cfg = SparseFeatureConfig(d=2, n_features=18, firing=Linear(0.6, 0.05), hierarchy=spec)
    model = SparseFeatureModel(cfg)
    p = Linear(0.6, 0.05).probabilities(18)
    parent = bfs_parents(2, 2, 2, 18)
    expected = [p[i] / p[parent[i]] if parent[i] >= 0 else p[i] for i in range(18)]
    np.testing.assert_allclose(model.probabilities.numpy(), expected, rtol=1e-12)
    active = model.sample(10000, gen(1)).codes.active().numpy()
    assert_rates(active, p)


def test_compensation_formula_with_mutual_exclusion_and_clamping():
    spec = Hierarchy(n_roots=1, branching=3, depth=1, mutually_exclusive=True, compensate=True)
    cfg = SparseFeatureConfig(d=2, n_features=4, firing=Linear(0.5, 0.1), hierarchy=spec)
    p = Linear(0.5, 0.1).probabilities(4)
    got = SparseFeatureModel(cfg).probabilities.numpy()
    kids = [1, 2, 3]
    for k in kids:
        rivals = sum(p[j] for j in kids if j != k) / p[0]
        assert got[k] == pytest.approx(min(1.0, p[k] / p[0] * (1 + rivals)), rel=1e-12)
    assert got[0] == p[0]
    clamped = SparseFeatureModel(cfg.replace(firing=Constant(0.3), hierarchy=Hierarchy(1, 2, 1, compensate=True)))
    np.testing.assert_allclose(clamped.probabilities.numpy(), [0.3, 1.0, 1.0, 0.3])  # 0.3 / 0.3, clamped


def test_mutual_exclusion_keeps_a_uniform_winner():
    # One root with three children firing independently with q = 0.6, 0.4, 0.2 given the root; of the
    # children that would fire, one is kept uniformly at random. Reference: enumerate all subsets.
    spec = Hierarchy(n_roots=1, branching=3, depth=1, mutually_exclusive=True)
    cfg = SparseFeatureConfig(d=2, n_features=4, firing=Linear(0.8, 0.2), hierarchy=spec)
    p = Linear(0.8, 0.2).probabilities(4)
    q = p[1:]
    win = np.zeros(3)
    for subset in itertools.product([0, 1], repeat=3):
        if not any(subset):
            continue
        prob = np.prod([qk if s else 1 - qk for qk, s in zip(q, subset, strict=True)])
        for k in range(3):
            if subset[k]:
                win[k] += prob / sum(subset)
    n = 10000
    active = SparseFeatureModel(cfg).sample(n, gen(2)).codes.active().numpy()
    assert active[:, 1:].sum(1).max() <= 1
    assert_rates(active, np.concatenate([[p[0]], p[0] * win]))
    none = np.prod(1 - q)
    assert binomial_pvalues((active[:, 0] & ~active[:, 1:].any(1)).sum(), n, p[0] * none) > ALPHA


def _child_ratios(model, batch):
    """For every firing child: (child value / (parent value / parent mean), child col, parent value)."""
    dense = batch.codes.to_dense()
    rows, cols, values = batch.codes.rows, batch.codes.cols, batch.codes.values
    par = model.parent[cols]
    child = par >= 0
    parent_values = dense[rows[child], par[child]]
    assert (parent_values > 0).all()
    return values[child], cols[child], par[child], parent_values


def test_scale_children_uniform_magnitudes():
    spec = Hierarchy(n_roots=2, branching=2, depth=2, scale_children=True)
    cfg = SparseFeatureConfig(d=2, n_features=14, firing=Constant(0.7), magnitude=Uniform(1.0, 3.0), hierarchy=spec)
    model = SparseFeatureModel(cfg)
    batch = model.sample(3000, gen(3))
    values, cols, par, parent_values = _child_ratios(model, batch)
    ratio = (values / (parent_values / 2.0)).double().numpy()  # E[Uniform(1, 3)] = 2
    assert ratio.min() >= 1.0 - 1e-5 and ratio.max() <= 3.0 + 1e-5
    assert stats.kstest(ratio, stats.uniform(1.0, 2.0).cdf).pvalue > 1e-6
    assert stats.spearmanr(ratio, parent_values.numpy()).pvalue > 1e-6  # independent of the parent
    roots = batch.codes.values[model.parent[batch.codes.cols] < 0].double().numpy()
    assert stats.kstest(roots, stats.uniform(1.0, 2.0).cdf).pvalue > 1e-6
    # Without scaling, children are plain Uniform(1, 3) draws.
    plain = SparseFeatureModel(cfg.replace(hierarchy=Hierarchy(2, 2, 2))).sample(3000, gen(3))
    assert plain.codes.values.min() >= 1.0 and plain.codes.values.max() < 3.0


def test_mean_magnitude_closed_forms():
    # E|N(mu, sigma²)| from scipy, per feature; the means run linearly, the stds are drawn per feature.
    mag = FoldedNormal(mean_start=2.0, mean_end=0.0, std=1.0, std_spread=0.5)
    model = SparseFeatureModel(SparseFeatureConfig(d=2, n_features=9, magnitude=mag))
    mu, sigma = model.magnitude_params
    np.testing.assert_allclose(mu.numpy(), np.linspace(2.0, 0.0, 9), atol=1e-6)
    assert (sigma > 0).all()
    expected = stats.foldnorm(mu.double().numpy() / sigma.double().numpy(), scale=sigma.double().numpy()).mean()
    np.testing.assert_allclose(model.mean_magnitude.numpy(), expected, rtol=1e-5)
    uniform = SparseFeatureModel(SparseFeatureConfig(d=2, n_features=3, magnitude=Uniform(1.0, 4.0)))
    np.testing.assert_allclose(uniform.mean_magnitude.numpy(), [2.5] * 3)
    constant = SparseFeatureModel(SparseFeatureConfig(d=2, n_features=3, magnitude=ConstantMagnitude(0.7)))
    np.testing.assert_allclose(constant.mean_magnitude.numpy(), [0.7] * 3, rtol=1e-7)
    std0 = SparseFeatureModel(SparseFeatureConfig(d=2, n_features=3, magnitude=FoldedNormal(3.0, 1.0)))
    np.testing.assert_allclose(std0.mean_magnitude.numpy(), [3.0, 2.0, 1.0], rtol=1e-7)


def test_scale_children_folded_normal_magnitudes():
    # Means near zero relative to the std, so the folding matters.
    mag = FoldedNormal(mean_start=1.0, mean_end=0.0, std=0.8)
    spec = Hierarchy(n_roots=1, branching=3, depth=2, scale_children=True)
    cfg = SparseFeatureConfig(d=2, n_features=13, firing=Constant(0.8), magnitude=mag, hierarchy=spec)
    model = SparseFeatureModel(cfg)
    means = np.linspace(1.0, 0.0, 13)
    ref_mean = stats.foldnorm(means / 0.8, scale=0.8).mean()  # E|N(mu, sigma²)| from scipy
    values, cols, par, parent_values = _child_ratios(model, model.sample(3000, gen(4)))
    ratio = values.double().numpy() / (parent_values.double().numpy() / ref_mean[par.numpy()])
    c = cols.numpy()
    u = stats.foldnorm(means[c] / 0.8, scale=0.8).cdf(ratio)  # probability integral transform
    assert stats.kstest(u, "uniform").pvalue > 1e-6


def test_scale_children_constant_magnitudes_give_exact_ratio():
    # Per-feature constants (std 0): parent value / parent mean = 1, so each value is its own constant.
    mag = FoldedNormal(mean_start=3.0, mean_end=1.0, std=0.0)
    spec = Hierarchy(n_roots=2, branching=2, depth=2, scale_children=True)
    cfg = SparseFeatureConfig(d=2, n_features=16, firing=Constant(0.8), magnitude=mag, hierarchy=spec)
    model = SparseFeatureModel(cfg)
    batch = model.sample(500, gen(5))
    means = torch.linspace(3.0, 1.0, 16)
    torch.testing.assert_close(batch.codes.values, means[batch.codes.cols], rtol=1e-6, atol=0)
    values, cols, par, parent_values = _child_ratios(model, batch)
    torch.testing.assert_close(values / (parent_values / means[par]), means[cols], rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------------------
# Reconstruction and noise


@st.composite
def small_configs(draw, hierarchy: bool = True):
    n_features = draw(st.integers(1, 30))
    spec = None
    if hierarchy and draw(st.booleans()):
        spec = Hierarchy(
            draw(st.integers(1, 2)),
            draw(st.integers(1, 3)),
            draw(st.integers(1, 2)),
            *draw(st.tuples(*[st.booleans()] * 3)),
        )
        n_features = max(n_features, spec.n_nodes)
    return SparseFeatureConfig(
        d=draw(st.integers(1, 12)),
        n_features=n_features,
        firing=draw(st.sampled_from([Constant(0.2), Linear(0.9, 0.01), Geometric(0.9, 0.5), Zipf(0.5, 0.01, 0.6)])),
        magnitude=draw(
            st.sampled_from([Uniform(), Uniform(0.5, 4.0), ConstantMagnitude(2.0), FoldedNormal(5, 4, 0.5, 0.5)])
        ),
        correlation=draw(st.sampled_from([None, LowRank(2, 0.5), LowRank(3, 4.0), RandomCorrelation(0.5)])),
        hierarchy=spec,
        bias_norm=draw(st.sampled_from([0.0, 0.5, 3.0])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@settings(max_examples=20, deadline=None)
@given(cfg=small_configs(), seed=seeds)
def test_x_is_codes_times_directions_plus_bias(cfg, seed):
    model = SparseFeatureModel(cfg)
    n = 200
    batch = model.sample(n, gen(seed))
    assert batch.x.shape == (n, cfg.d) and batch.x.dtype == torch.float32
    assert len(batch) == n
    assert batch.directions is model.directions
    assert model.directions.shape == (cfg.n_features, cfg.d)
    torch.testing.assert_close(model.directions.norm(dim=1), torch.ones(cfg.n_features), atol=1e-5, rtol=0)
    recon = batch.codes.to_dense().double() @ model.directions.double()
    torch.testing.assert_close(batch.x.double(), recon + model.bias.double(), atol=1e-5, rtol=1e-5)
    residual = batch.x.double() - recon  # every row is the bias, of norm bias_norm
    torch.testing.assert_close(residual, residual[:1].expand_as(residual), atol=1e-5, rtol=1e-5)
    assert float(residual[0].norm()) == pytest.approx(cfg.bias_norm, abs=1e-5)


@pytest.mark.parametrize("noise_std", [0.1, 0.5])
def test_noise_has_the_configured_std(noise_std):
    cfg = SparseFeatureConfig(d=32, n_features=20, firing=Constant(0.1), bias_norm=1.0, noise_std=noise_std, seed=3)
    model = SparseFeatureModel(cfg)
    batch = model.sample(2000, gen(7))
    noise = (batch.x.double() - batch.codes.to_dense().double() @ model.directions.double() - model.bias).flatten()
    m = noise.numel()
    chi2 = float((noise**2).sum()) / noise_std**2  # ~ chi2(m) for N(0, noise_std²) entries
    assert min(stats.chi2.cdf(chi2, m), stats.chi2.sf(chi2, m)) > 1e-7
    assert abs(float(noise.mean())) < 5.5 * noise_std / math.sqrt(m)
    assert stats.kstest(noise.numpy() / noise_std, "norm").pvalue > 1e-6


# ---------------------------------------------------------------------------------------------------
# Reproducibility and serialisation


def _bytes(batch):
    return batch.x, batch.codes.rows, batch.codes.cols, batch.codes.values


@settings(max_examples=15, deadline=None)
@given(cfg=small_configs(), seed=seeds)
def test_same_config_and_seed_give_identical_bytes(cfg, seed):
    a, b = SparseFeatureModel(cfg), SparseFeatureModel(cfg)
    assert torch.equal(a.directions, b.directions)
    assert torch.equal(a.bias, b.bias)
    for u, v in zip(_bytes(a.sample(64, gen(seed))), _bytes(b.sample(64, gen(seed))), strict=True):
        assert torch.equal(u, v)
    for u, v in zip(_bytes(a.eval_set(32)), _bytes(b.eval_set(32)), strict=True):
        assert torch.equal(u, v)


def test_blocks_give_the_same_bytes_on_any_number_of_threads():
    # 2,500 rows are three blocks, drawn in parallel on two threads and in turn on one.
    model = SparseFeatureModel(preset("synthsaebench-small"))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        parallel = model.sample(2500, gen(4))
        torch.set_num_threads(1)
        serial = model.sample(2500, gen(4))
    finally:
        torch.set_num_threads(before)
    for u, v in zip(_bytes(parallel), _bytes(serial), strict=True):
        assert torch.equal(u, v)
    rows = parallel.codes.rows
    assert bool((rows[1:] >= rows[:-1]).all()) and int(rows[-1]) >= 2048  # block rows offset, in order
    assert parallel.codes.shape == (2500, 4096)


def test_different_seeds_differ():
    cfg = SparseFeatureConfig(d=8, n_features=30, firing=Constant(0.3), bias_norm=1.0, correlation=LowRank(2, 0.5))
    a, b = SparseFeatureModel(cfg), SparseFeatureModel(cfg.replace(seed=1))
    assert not torch.equal(a.directions, b.directions)
    assert not torch.equal(a.bias, b.bias)
    assert not torch.equal(a.sample(50, gen(0)).x, b.sample(50, gen(0)).x)
    assert not torch.equal(a.sample(50, gen(0)).x, a.sample(50, gen(1)).x)
    assert not torch.equal(a.eval_set(50).x, b.eval_set(50).x)


def test_eval_set_and_streams():
    cfg = SparseFeatureConfig(d=8, n_features=30, firing=Constant(0.3), hierarchy=Hierarchy(2, 2, 1))
    model = SparseFeatureModel(cfg)
    ev = model.eval_set(100)
    assert torch.equal(ev.x, model.eval_set(100).x)
    assert torch.equal(ev.x, SparseFeatureModel(cfg).eval_set(100).x)
    assert not torch.equal(ev.x, model.eval_set(100, seed=1).x)
    stream = model.stream(100)
    first, second = next(stream), next(stream)
    assert not torch.equal(first.x, second.x)
    assert not torch.equal(first.x, ev.x) and not torch.equal(second.x, ev.x)
    again = model.stream(100)
    assert torch.equal(next(again).x, first.x) and torch.equal(next(again).x, second.x)
    assert not torch.equal(next(model.stream(100, seed=1)).x, first.x)
    xs = model.activations(100)
    assert torch.equal(next(xs), first.x) and torch.equal(next(xs), second.x)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_config_json_round_trip(name):
    cfg = preset(name)
    assert SparseFeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert SparseFeatureConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert preset(name, seed=7).seed == 7
    assert preset(name, seed=7) == cfg.replace(seed=7)


@settings(max_examples=20, deadline=None)
@given(cfg=small_configs(), target=st.none() | st.floats(0.1, 1.0), overlap=st.none() | st.floats(0.5, 1.0))
def test_config_json_round_trip(cfg, target, overlap):
    cfg = cfg.replace(target_l0=target, directions=Directions(max_overlap=overlap), noise_std=0.25)
    back = SparseFeatureConfig.from_dict(json.loads(cfg.to_json()))
    assert back == cfg
    assert type(back.firing) is type(cfg.firing) and type(back.magnitude) is type(cfg.magnitude)


def test_from_dict_rejects_unknown_kinds_and_fields():
    data = SparseFeatureConfig(d=2, n_features=3).to_dict()
    with pytest.raises(ValueError, match="unknown config kind"):
        SparseFeatureConfig.from_dict({**data, "firing": {"kind": "Nope", "p": 0.1}})
    with pytest.raises(ValueError, match=r"unknown SparseFeatureConfig fields: \[.colour.\]"):
        SparseFeatureConfig.from_dict({**data, "colour": "blue"})


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="unknown preset"):
        preset("sharkey2023")


# ---------------------------------------------------------------------------------------------------
# User-supplied structure and argument checks


def test_user_directions_are_used():
    d, n_features = 6, 10
    dirs = torch.randn(n_features, d, generator=gen(0)) * 3.0  # deliberately not unit norm
    cfg = SparseFeatureConfig(d=d, n_features=n_features, firing=Constant(0.4), bias_norm=0.5)
    model = SparseFeatureModel(cfg, directions=dirs)
    assert torch.equal(model.directions, dirs)
    dirs.zero_()  # the model keeps its own copy
    assert model.directions.abs().sum() > 0
    batch = model.sample(100, gen(1))
    torch.testing.assert_close(batch.x, batch.codes.to_dense() @ model.directions + model.bias, atol=1e-5, rtol=1e-5)
    assert not torch.equal(model.directions, SparseFeatureModel(cfg).directions)


@pytest.mark.parametrize(
    "bad",
    [torch.randn(10, 5), torch.randn(9, 6), torch.randn(60), torch.full((10, 6), float("nan"))],
    ids=["wrong-d", "wrong-F", "flat", "nan"],
)
def test_bad_user_directions_raise(bad):
    cfg = SparseFeatureConfig(d=6, n_features=10)
    with pytest.raises(ValueError, match="directions"):
        SparseFeatureModel(cfg, directions=bad)


def test_non_tensor_directions_raise():
    with pytest.raises(TypeError, match="directions"):
        SparseFeatureModel(SparseFeatureConfig(d=2, n_features=2), directions=[[1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]], "positive semi-definite"),
        ([[1.0, 0.5, 0.0], [0.2, 1.0, 0.0], [0.0, 0.0, 1.0]], "symmetric"),
        ([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]], "unit diagonal"),
        ([[1.0, 0.0], [0.0, 1.0]], "shape"),
        ([[1.0, float("nan"), 0.0], [float("nan"), 1.0, 0.0], [0.0, 0.0, 1.0]], "NaN"),
    ],
)
def test_bad_correlation_matrix_raises(matrix, message):
    cfg = SparseFeatureConfig(d=2, n_features=3)
    with pytest.raises(ValueError, match=message):
        SparseFeatureModel(cfg, correlation_matrix=torch.tensor(matrix))


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"d": 0}, "d"),
        ({"d": -3}, "d"),
        ({"n_features": 0}, "n_features"),
        ({"n_features": -1}, "n_features"),
        ({"bias_norm": float("nan")}, "bias_norm"),
        ({"bias_norm": -1.0}, "bias_norm"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"noise_std": float("nan")}, "noise_std"),
        ({"seed": -1}, "seed"),
        ({"hierarchy": Hierarchy(n_roots=2, branching=2, depth=2)}, "hierarchy"),  # 14 nodes > 10 features
    ],
)
def test_bad_config_raises(changes, name):
    with pytest.raises(ValueError, match=name):
        SparseFeatureConfig(**{"d": 4, "n_features": 10, **changes})


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: Hierarchy(0, 2, 1), "Hierarchy.n_roots"),
        (lambda: Hierarchy(1, 0, 1), "Hierarchy.branching"),
        (lambda: Hierarchy(1, 2, 0), "Hierarchy.depth"),
        (lambda: LowRank(0, 0.1), "LowRank.rank"),
        (lambda: LowRank(2, -0.1), "LowRank.scale"),
        (lambda: LowRank(2, float("nan")), "LowRank.scale"),
        (lambda: RandomCorrelation(1.5), "RandomCorrelation.strength"),
        (lambda: Uniform(2.0, 1.0), "Uniform.high"),
        (lambda: Uniform(-1.0, 1.0), "Uniform.low"),
        (lambda: ConstantMagnitude(0.0), "ConstantMagnitude.value"),
        (lambda: FoldedNormal(std=float("nan")), "FoldedNormal.std"),
        (lambda: Directions(max_overlap=0.0), "Directions.max_overlap"),
        (lambda: Directions(max_overlap=1.5), "Directions.max_overlap"),
        (lambda: Directions(max_rounds=0), "Directions.max_rounds"),
    ],
)
def test_bad_components_raise(make, name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        make()


@pytest.mark.parametrize("n", [0, -5])
def test_sample_rejects_bad_sizes(n):
    model = SparseFeatureModel(SparseFeatureConfig(d=2, n_features=3))
    with pytest.raises(ValueError, match="n must"):
        model.sample(n, gen(0))


def test_rare_features_can_give_empty_samples():
    model = SparseFeatureModel(SparseFeatureConfig(d=3, n_features=4, firing=Constant(1e-6), bias_norm=1.0))
    batch = model.sample(10, gen(0))
    assert batch.codes.rows.numel() == 0
    torch.testing.assert_close(batch.x, model.bias.expand(10, 3))


# ---------------------------------------------------------------------------------------------------
# Directions


@settings(max_examples=20, deadline=None)
@given(seed=seeds, d=st.integers(4, 16), ratio=st.floats(0.1, 3.0), frac=st.floats(0.0, 1.0))
def test_directions_respect_max_overlap(seed, d, ratio, frac):
    n = max(2, round(ratio * d))
    bound = welch_bound(n, d)
    target = min(0.95, max(2 * bound, bound + 0.1 + 0.25 * frac))
    dirs = Directions(max_overlap=target).build(n, d, gen(seed))
    assert dirs.shape == (n, d)
    torch.testing.assert_close(dirs.norm(dim=1), torch.ones(n), atol=1e-5, rtol=0)
    gram = (dirs.double() @ dirs.double().T).abs().fill_diagonal_(0)
    assert float(gram.max()) <= target + 1e-6
    assert float(largest_overlap(dirs)) == pytest.approx(float(gram.max()), abs=1e-6)
    assert float(largest_overlap(dirs, chunk=3)) == pytest.approx(float(gram.max()), abs=1e-6)


@settings(max_examples=20, deadline=None)
@given(
    seed=seeds,
    case=st.sampled_from([(4, 2, 0.8), (5, 2, 0.9375), (6, 2, 0.95), (8, 3, 0.9), (9, 2, 0.9921875), (12, 2, 0.99)]),
)
def test_directions_reach_feasible_overlaps_in_few_dimensions(seed, case):
    """Lines in the plane: the optimum for n lines is cos(pi / n), so each target is feasible, yet
    pushing one pair apart pushes another together; the optimiser must not stall in that cycle, nor
    leave nearly parallel pairs (random draws 1 degree apart, which a push along the other row
    barely turns) where they are."""
    n, d, target = case
    assert d > 2 or target > math.cos(math.pi / n)  # feasible
    assert float(largest_overlap(Directions(max_overlap=target).build(n, d, gen(seed)))) <= target


def test_nearly_parallel_lines_are_turned_apart():
    # Seed 15 draws 9 lines in the plane with two pairs 0.9 and 1.3 degrees apart (|cos| 0.9999).
    dirs = Directions(max_overlap=0.9921875).build(9, 2, gen(15))
    assert float(largest_overlap(dirs)) <= 0.9921875


def test_directions_in_a_model_respect_max_overlap():
    cfg = SparseFeatureConfig(d=16, n_features=48, directions=Directions(max_overlap=0.45), seed=2)
    dirs = SparseFeatureModel(cfg).directions
    assert float(largest_overlap(dirs)) <= 0.45
    free = SparseFeatureModel(cfg.replace(directions=Directions())).directions
    assert float(largest_overlap(free)) > 0.45  # random directions would not have met it


def test_welch_bound_closed_forms():
    assert welch_bound(5, 8) == 0.0 and welch_bound(8, 8) == 0.0
    # A regular simplex of d + 1 unit vectors in d dimensions meets the bound: |cos| = 1 / d.
    for d in (2, 3, 7):
        assert welch_bound(d + 1, d) == pytest.approx(1 / d)
        simplex = torch.eye(d + 1) - 1.0 / (d + 1)  # centred basis: rank d, in a d-dimensional subspace
        simplex = simplex / simplex.norm(dim=1, keepdim=True)
        assert float(largest_overlap(simplex)) == pytest.approx(1 / d, abs=1e-6)


def test_unreachable_max_overlap_raises():
    # Above the Welch bound but too tight for one round of the optimiser: it must say so, not return.
    target = 1.05 * welch_bound(40, 8)
    with pytest.raises(ValueError, match="could not reach"):
        Directions(max_overlap=target, max_rounds=1).build(40, 8, gen(0))


def test_max_overlap_below_welch_bound_raises():
    bound = welch_bound(40, 8)
    with pytest.raises(ValueError, match="Welch bound"):
        Directions(max_overlap=0.95 * bound).build(40, 8, gen(0))
    cfg = SparseFeatureConfig(d=8, n_features=40, directions=Directions(max_overlap=0.95 * bound))
    with pytest.raises(ValueError, match="max_overlap"):
        SparseFeatureModel(cfg)


# ---------------------------------------------------------------------------------------------------
# Presets


def test_sharkey2022_mean_l0_is_five():
    cfg = preset("sharkey2022")
    model = SparseFeatureModel(cfg)
    assert model.directions.shape == (512, 256)
    assert float(model.probabilities.sum()) == pytest.approx(5.0, rel=1e-9)
    n = 4000
    batch = model.sample(n, gen(0))
    l0 = batch.codes.active().sum(1).double()
    assert abs(float(l0.mean()) - 5.0) < 5 * float(l0.std()) / math.sqrt(n)
    assert float(batch.codes.values.max()) < 1.0  # Uniform[0, 1) coefficients


def test_synthsaebench_small_builds_fast_and_respects_hierarchy():
    cfg = preset("synthsaebench-small")
    start = time.perf_counter()
    model = SparseFeatureModel(cfg)
    assert time.perf_counter() - start < 5.0
    assert model.directions.shape == (4096, 256)
    assert float(largest_overlap(model.directions)) <= 0.3
    assert float(model.bias.norm()) == pytest.approx(0.5, abs=1e-5)
    parent = model.parent
    assert parent.tolist() == bfs_parents(32, 4, 3, 4096)
    n = 1024
    batch = model.sample(n, gen(0))
    assert_codes_well_formed(batch, n, 4096)
    active = batch.codes.active()
    children = torch.nonzero(parent >= 0).flatten()
    assert not (active[:, children] & ~active[:, parent[children]]).any()
    # Mutually exclusive children: at most one per (sample, parent).
    rows, cols = batch.codes.rows, batch.codes.cols
    is_child = parent[cols] >= 0
    group = rows[is_child] * 4096 + parent[cols[is_child]]
    assert torch.unique(group).numel() == group.numel()
    torch.testing.assert_close(batch.x, batch.codes.to_dense() @ model.directions + model.bias, atol=1e-4, rtol=1e-5)


def test_strongly_correlated_low_rank_sampling_stays_cheap():
    # Regression: with strong correlation the thinning bound of a block approaches 1 and its Poisson
    # hazard grows without limit (~c²/2 points per cell); such blocks must be drawn cell by cell.
    cfg = SparseFeatureConfig(d=4, n_features=4096, firing=Zipf(0.5, 5e-4, 0.4), correlation=LowRank(25, 1.0))
    model = SparseFeatureModel(cfg)
    start = time.perf_counter()
    batch = model.sample(1024, gen(0))
    assert time.perf_counter() - start < 3.0
    p = model.probabilities.numpy()
    assert abs(batch.codes.l0() - p.sum()) < 0.2 * p.sum()


def test_uniform_from_zero_never_gives_a_zero_coefficient():
    # Regression: torch.rand returns exactly 0 with probability 2^-24 (it does within these 2^20 draws
    # for this generator seed), which with Uniform(0, 1) made a firing feature's coefficient 0.
    n = 2**20
    values = Uniform().draw(torch.zeros(n), torch.ones(n), gen(12))
    assert (values > 0).all() and (values < 1).all()
    assert stats.kstest(values[:20000].double().numpy(), "uniform").pvalue > 1e-6
    # The same in a model: the codes of firing features are strictly positive (seed found by Hypothesis).
    cfg = SparseFeatureConfig(d=3, n_features=24, firing=Linear(0.984375, 0.0), seed=515)
    batch = SparseFeatureModel(cfg).sample(3000, gen(1515))
    assert (batch.codes.values > 0).all()
    assert torch.equal(batch.codes.active(), batch.codes.to_dense() > 0)


def test_a_sample_is_its_blocks_drawn_from_their_seeds():
    model = SparseFeatureModel(SparseFeatureConfig(d=4, n_features=8, firing=Constant(0.3)))
    seeds = model.block_seeds(2049, gen(5))
    assert len(seeds) == 3  # blocks of 1,024 rows: 1,024 + 1,024 + 1
    for u, v in zip(_bytes(model.sample_blocks(2049, seeds)), _bytes(model.sample(2049, gen(5))), strict=True):
        assert torch.equal(u, v)
    with pytest.raises(ValueError, match="seeds must hold one seed per block of 1024 rows \\(3\\), got 2"):
        model.sample_blocks(2049, seeds[:2])
