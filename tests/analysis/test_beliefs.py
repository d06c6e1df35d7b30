"""Belief regression: a planted linear map is recovered exactly, weights act like repeated rows,
shuffled targets explain nothing, the split is by sequence."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from analysis.beliefs import belief_regression, regress, sequence_split
from groundtruth.processes import mess3, rrxor


@given(st.integers(0, 2**31 - 1), st.integers(2, 12), st.integers(1, 4))
def test_planted_linear_map_is_recovered_exactly(seed, d, k):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(200, d, generator=g, dtype=torch.float64)
    beta, c = torch.randn(d, k, generator=g, dtype=torch.float64), torch.randn(k, generator=g, dtype=torch.float64)
    test = torch.arange(200) % 4 == 0
    fit = regress(x, x @ beta + c, test)
    torch.testing.assert_close(fit.coef, torch.cat([beta, c[None]]), atol=1e-6, rtol=1e-6)
    assert fit.mse < 1e-12 and fit.r2 == pytest.approx(1.0)


@given(st.integers(0, 2**31 - 1))
def test_integer_weights_equal_repeated_rows(seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(60, 3, generator=g), torch.randn(60, 2, generator=g)
    reps = torch.randint(1, 4, (60,), generator=g)
    test = torch.arange(60) >= 45
    weighted = regress(x, y, test, weights=reps.double())
    repeated = regress(x.repeat_interleave(reps, 0), y.repeat_interleave(reps, 0), test.repeat_interleave(reps, 0))
    torch.testing.assert_close(weighted.coef, repeated.coef)
    assert weighted.mse_weighted == pytest.approx(repeated.mse)
    assert weighted.r2_weighted == pytest.approx(repeated.r2)


def test_shuffled_baseline_explains_nothing_and_matches_refits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 5, generator=g)
    y = x @ torch.randn(5, 3, generator=g) + 0.1 * torch.randn(2000, 3, generator=g)
    test = torch.arange(2000) % 5 == 0
    fit = regress(x, y, test, shuffles=50, generator=torch.Generator().manual_seed(1))
    assert fit.r2 > 0.95 and fit.shuffled_r2 < 0.01
    # the batched shuffles equal refitting each permutation from scratch, scored on the same test rows
    g1 = torch.Generator().manual_seed(1)
    refits = []
    for _ in range(50):
        perm = torch.randperm(int((~test).sum()), generator=g1)
        y_shuffled = y.clone()
        y_shuffled[~test] = y[~test][perm]
        coef = regress(x, y_shuffled, test).coef
        pred = torch.cat([x[test], torch.ones(int(test.sum()), 1)], 1).double() @ coef
        refits.append(float(((pred - y[test].double()) ** 2).mean()))
    assert fit.shuffled_mse == pytest.approx(sum(refits) / 50, rel=1e-9)


def test_split_is_by_sequence():
    test = sequence_split(100, 0.25, torch.Generator().manual_seed(0))
    assert int(test.sum()) == 25
    with pytest.raises(ValueError, match="test_fraction"):
        sequence_split(100, 1.0, torch.Generator())


def test_beliefs_regress_perfectly_from_themselves_and_rrxor_needs_more_than_the_last_token():
    hmm = rrxor()
    tokens, beliefs, logp = hmm.all_sequences(8)
    weights = torch.exp(logp[:, -1:]).expand(-1, 8)
    fit = belief_regression(beliefs[:, 1:], beliefs[:, 1:], weights=weights)
    assert fit.r2 == pytest.approx(1.0) and fit.mse < 1e-20
    one_hot_last = torch.nn.functional.one_hot(tokens, 2).double()
    assert belief_regression(one_hot_last, beliefs[:, 1:], weights=weights).r2_weighted < 0.5


def test_all_sequences_have_positive_probability_summing_to_one():
    tokens, beliefs, logp = mess3().all_sequences(4)
    assert tokens.shape == (81, 4)
    assert torch.exp(logp[:, -1]).sum() == pytest.approx(1.0)
    tokens, _, logp = rrxor().all_sequences(6)
    assert torch.isfinite(logp).all()


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="agree"):
        regress(torch.zeros(10, 2), torch.zeros(9, 1), torch.zeros(10, dtype=torch.bool))
    with pytest.raises(ValueError, match="held out"):
        regress(torch.zeros(10, 2), torch.zeros(10, 1), torch.zeros(10, dtype=torch.bool))
    with pytest.raises(ValueError, match="disagree"):
        belief_regression(torch.zeros(4, 3, 2), torch.zeros(4, 2, 3))
