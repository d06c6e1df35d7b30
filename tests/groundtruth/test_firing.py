"""Firing schedules against their closed forms, target_l0 rescaling, and argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from groundtruth.firing import Constant, Geometric, Linear, Zipf, firing_probabilities
from groundtruth.sparse_model import SparseFeatureConfig, SparseFeatureModel

unit = st.floats(0.0, 1.0)
sizes = st.integers(1, 200)


@settings(max_examples=20, deadline=None)
@given(p=unit, n=sizes)
def test_constant_is_flat(p, n):
    probs = Constant(p).probabilities(n)
    assert probs.shape == (n,)
    assert probs.dtype == np.float64
    assert (probs == p).all()


@settings(max_examples=20, deadline=None)
@given(ratio=st.floats(0.01, 1.0), p0=unit, n=sizes)
def test_geometric_closed_form(ratio, p0, n):
    probs = Geometric(ratio, p0).probabilities(n)
    expected = [p0 * math.pow(ratio, i) for i in range(n)]
    np.testing.assert_allclose(probs, expected, rtol=1e-12, atol=1e-300)
    assert (np.diff(probs) <= 0).all()  # feature 0 is the most frequent


@settings(max_examples=20, deadline=None)
@given(start=unit, end=unit, n=sizes)
def test_linear_closed_form(start, end, n):
    probs = Linear(start, end).probabilities(n)
    expected = [start] if n == 1 else [start + (end - start) * i / (n - 1) for i in range(n)]
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-12)
    assert probs[0] == start
    if n > 1:
        assert probs[-1] == pytest.approx(end, abs=1e-15)


@settings(max_examples=20, deadline=None)
@given(exponent=st.floats(0.05, 3.0), a=unit, b=unit, n=sizes)
def test_zipf_closed_form(exponent, a, b, n):
    p_min, p_max = min(a, b), max(a, b)
    probs = Zipf(exponent, p_min, p_max).probabilities(n)
    if n == 1:
        assert list(probs) == [p_max]
        return
    # 1/rank^s mapped affinely so that rank 1 -> p_max and rank n -> p_min.
    lo = n**-exponent
    expected = [p_min + (p_max - p_min) * (r**-exponent - lo) / (1 - lo) for r in range(1, n + 1)]
    np.testing.assert_allclose(probs, expected, rtol=1e-9, atol=1e-12)
    assert probs[0] == pytest.approx(p_max, abs=1e-15)
    assert probs[-1] == pytest.approx(p_min, abs=1e-15)
    assert (np.diff(probs) <= 1e-15).all()
    assert ((probs >= p_min - 1e-15) & (probs <= p_max + 1e-15)).all()


def test_zipf_known_values():
    # n = 3, exponent 1: raw = 1, 1/2, 1/3 -> (raw - 1/3) / (2/3) = 1, 1/4, 0.
    np.testing.assert_allclose(Zipf(1.0, 0.1, 0.5).probabilities(3), [0.5, 0.2, 0.1], atol=1e-15)


schedules = st.one_of(
    st.builds(Constant, st.floats(0.001, 1.0)),
    st.builds(Geometric, st.floats(0.5, 1.0), st.floats(0.001, 1.0)),
    st.builds(Linear, st.floats(0.001, 1.0), st.floats(0.001, 1.0)),
    st.builds(lambda e, lo, span: Zipf(e, lo, min(lo + span, 1.0)), st.floats(0.1, 2), st.floats(1e-6, 1.0), unit),
)


@settings(max_examples=20, deadline=None)
@given(schedule=schedules, n=sizes, frac=st.floats(0.01, 1.0))
def test_target_l0_rescales_to_the_target(schedule, n, frac):
    raw = schedule.probabilities(n)
    if raw.sum() <= 0:
        return
    target = min(float(n), frac * (raw.sum() / raw.max()))  # the largest target keeping p <= 1, times frac
    probs = firing_probabilities(schedule, n, target)
    assert probs.sum() == pytest.approx(target, rel=1e-9)
    np.testing.assert_allclose(probs, raw * (target / raw.sum()), rtol=1e-12)  # same shape, rescaled
    assert (probs <= 1.0).all()


@settings(max_examples=20, deadline=None)
@given(p=st.floats(0.001, 1.0), n=sizes)
def test_target_l0_of_n_fires_everything(p, n):
    # target_l0 = n is allowed and only reachable with p = 1 everywhere; rounding must not reject it.
    probs = firing_probabilities(Constant(p), n, float(n))
    assert (probs <= 1.0).all()
    np.testing.assert_allclose(probs, np.ones(n), rtol=1e-12)


def test_target_l0_none_keeps_the_schedule():
    np.testing.assert_array_equal(firing_probabilities(Geometric(0.9, 0.5), 7), Geometric(0.9, 0.5).probabilities(7))


def test_target_l0_reaches_the_model():
    cfg = SparseFeatureConfig(d=4, n_features=50, firing=Geometric(0.95), target_l0=3.0)
    p = SparseFeatureModel(cfg).probabilities
    assert float(p.sum()) == pytest.approx(3.0, rel=1e-9)
    assert float(p[0]) == pytest.approx(3.0 * 0.05 / (1 - 0.95**50), rel=1e-9)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: Constant(-0.1), "Constant.p"),
        (lambda: Constant(1.5), "Constant.p"),
        (lambda: Constant(float("nan")), "Constant.p"),
        (lambda: Constant(float("inf")), "Constant.p"),
        (lambda: Geometric(0.0), "Geometric.ratio"),
        (lambda: Geometric(1.01), "Geometric.ratio"),
        (lambda: Geometric(-0.5), "Geometric.ratio"),
        (lambda: Geometric(float("nan")), "Geometric.ratio"),
        (lambda: Geometric(0.9, p0=1.2), "Geometric.p0"),
        (lambda: Geometric(0.9, p0=-0.2), "Geometric.p0"),
        (lambda: Geometric(0.9, p0=float("nan")), "Geometric.p0"),
        (lambda: Linear(-0.1, 0.5), "Linear.start"),
        (lambda: Linear(float("nan"), 0.5), "Linear.start"),
        (lambda: Linear(0.5, 1.1), "Linear.end"),
        (lambda: Linear(0.5, float("nan")), "Linear.end"),
        (lambda: Zipf(0.0, 0.1, 0.5), "Zipf.exponent"),
        (lambda: Zipf(-1.0, 0.1, 0.5), "Zipf.exponent"),
        (lambda: Zipf(float("nan"), 0.1, 0.5), "Zipf.exponent"),
        (lambda: Zipf(1.0, -0.1, 0.5), "Zipf.p_min"),
        (lambda: Zipf(1.0, float("nan"), 0.5), "Zipf.p_min"),
        (lambda: Zipf(1.0, 0.1, 1.5), "Zipf.p_max"),
        (lambda: Zipf(1.0, 0.1, float("nan")), "Zipf.p_max"),
        (lambda: Zipf(1.0, 0.6, 0.5), "Zipf.p_min"),
    ],
)
def test_impossible_schedules_raise_naming_the_argument(make, name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        make()


@pytest.mark.parametrize("target", [0.0, -1.0, float("nan"), float("inf"), 11.0])
def test_impossible_target_l0_raises(target):
    with pytest.raises(ValueError, match="target_l0"):
        firing_probabilities(Constant(0.1), 10, target)


def test_target_l0_needing_p_above_one_raises():
    # Geometric(0.5) over 10 features sums to ~2, so L0 = 3 needs p_0 ~ 1.5.
    with pytest.raises(ValueError, match="target_l0"):
        firing_probabilities(Geometric(0.5), 10, 3.0)
    cfg = SparseFeatureConfig(d=4, n_features=10, firing=Geometric(0.5), target_l0=3.0)
    with pytest.raises(ValueError, match="target_l0"):
        SparseFeatureModel(cfg)
    # The boundary itself is fine: a flat schedule reaches L0 = n with p = 1 everywhere.
    np.testing.assert_allclose(firing_probabilities(Constant(0.2), 10, 10.0), np.ones(10))


def test_target_l0_of_all_zero_schedule_raises():
    with pytest.raises(ValueError, match="target_l0"):
        firing_probabilities(Constant(0.0), 10, 1.0)
