"""Belief regression: a planted linear map is recovered exactly, weights act like repeated rows,
shuffled targets explain nothing, the split is by sequence."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from analysis.experiments.activations import activations, sae_codes, sae_reconstructions
from analysis.metrics.beliefs import (
    _design,
    _shuffled,
    belief_data,
    belief_regression,
    distance_agreement,
    expected_loss,
    regress,
    subset,
)
from analysis.metrics.splits import sequence_split
from groundtruth.entropy import optimal_loss
from groundtruth.processes import mess3, rrxor
from toymodels.sae import SAEConfig, make_sae


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


def test_belief_data_is_exhaustive_when_small_and_sampled_otherwise():
    hmm = rrxor()
    data = belief_data(hmm, 6)
    tokens, beliefs, logp = hmm.all_sequences(6)
    assert data.exhaustive and torch.equal(data.tokens, tokens)
    torch.testing.assert_close(data.beliefs, beliefs[:, 1:])
    torch.testing.assert_close(data.weights.sum(0), torch.ones(6, dtype=torch.float64))
    sampled = belief_data(hmm, 6, max_sequences=50, seed=3)
    assert not sampled.exhaustive and sampled.tokens.shape == (50, 6)
    torch.testing.assert_close(sampled.beliefs, hmm.filter(sampled.tokens)[0][:, 1:])


def test_expected_loss_of_the_exact_predictor_is_the_optimal_loss():
    """Logits equal to the log of the exact next-token distribution reach the closed-form optimum
    (computed independently from the mixed-state presentation's myopic entropies)."""
    for hmm in (mess3(0.05, 0.85), rrxor()):
        data = belief_data(hmm, 5)
        logits = torch.log(hmm.next_token_probs(data.beliefs).clamp(min=1e-300))
        assert expected_loss(logits, hmm, data) == pytest.approx(float(optimal_loss(hmm, 5).mean()), abs=1e-9)
        assert expected_loss(torch.zeros_like(logits), hmm, data) == pytest.approx(np.log(hmm.n_tokens))


@given(st.integers(0, 2**31 - 1))
def test_positions_partition_the_held_out_error(seed):
    g = torch.Generator().manual_seed(seed)
    beliefs = torch.softmax(torch.randn(40, 5, 3, generator=g, dtype=torch.float64), -1)
    acts = torch.cat([beliefs, torch.randn(40, 5, 4, generator=g, dtype=torch.float64)], -1) + 0.1 * torch.randn(
        40, 5, 7, generator=g, dtype=torch.float64
    )
    fit = belief_regression(acts, beliefs, seed=seed)
    assert len(fit.mse_by_position) == 5
    assert sum(fit.mse_by_position) / 5 == pytest.approx(fit.mse)  # every held-out sequence has all 5 positions
    torch.testing.assert_close(
        fit.predict(acts[:2]), _design(acts[:2].reshape(10, 7)).matmul(fit.coef).reshape(2, 5, 3)
    )


def test_r2_skips_coordinates_that_never_vary():
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.rand(300, 2, generator=g, dtype=torch.float64), torch.zeros(300, 1, dtype=torch.float64)], 1)
    fit = regress(y[:, :2] + 0.01 * torch.randn(300, 2, generator=g, dtype=torch.float64), y, torch.arange(300) < 60)
    assert 0.99 < fit.r2 <= 1.0  # the constant coordinate has no R² and does not drag the mean to -inf


def test_distance_agreement_separates_beliefs_from_next_token_predictions():
    hmm = rrxor()
    data = belief_data(hmm, 8)
    next_token = hmm.next_token_probs(data.beliefs)
    exact = distance_agreement(data.beliefs, data.beliefs, next_token, points=500)
    assert exact["beliefs_r2"] == pytest.approx(1.0)
    assert exact["next_token_r2"] < 0.5  # RRXOR: many beliefs share one next-token distribution
    myopic = distance_agreement(
        data.beliefs, next_token @ torch.randn(2, 5, dtype=torch.float64), next_token, points=500
    )
    assert myopic["next_token_r2"] > myopic["beliefs_r2"]


def test_sae_codes_equal_encode_on_flattened_activations():
    sae = make_sae(SAEConfig("topk", 6, 12, k=2, seed=0))
    acts = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(1))
    codes = sae_codes(sae, acts, batch_size=7)
    assert codes.shape == (4, 5, 12)
    torch.testing.assert_close(codes.reshape(20, 12), sae.encode(acts.reshape(20, 6)).detach())


def test_codes_and_reconstructions_run_in_the_sae_dtype_and_come_back_as_float32():
    sae = make_sae(SAEConfig("standard", 6, 12, seed=0)).double()  # batches follow the SAE (its device, its dtype)
    acts = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(1))
    codes = sae_codes(sae, acts, batch_size=7)
    x_hat = sae_reconstructions(sae, codes, batch_size=3)
    assert codes.dtype == x_hat.dtype == torch.float32 and x_hat.shape == acts.shape
    with torch.no_grad():
        exact = sae.decode(sae.encode(acts.reshape(20, 6).double()))
    torch.testing.assert_close(x_hat.reshape(20, 6), exact.float())


def test_activations_match_one_run_with_cache_in_any_batching_and_name_a_hook_once():
    from toymodels.transformer import HookedTransformer, TransformerConfig

    model = HookedTransformer(TransformerConfig(n_layers=1, d_model=8, n_ctx=5, d_vocab=4, d_mlp=16))
    tokens = torch.randint(0, 4, (7, 5), generator=torch.Generator().manual_seed(0))
    names = ["blocks.0.mlp.hook_post", "hook_embed", "blocks.0.mlp.hook_post"]
    logits, acts = activations(model, tokens, names, batch_size=3)
    expected_logits, cache = model.run_with_cache(tokens, names=names[:2])
    torch.testing.assert_close(logits, expected_logits)
    assert list(acts) == names[:2]
    for name in names[:2]:
        torch.testing.assert_close(acts[name], cache[name])


def test_subset_keeps_weights_normalised_and_rows_intact():
    data = belief_data(mess3(), 6)
    small = subset(data, 100, seed=2)
    assert small.tokens.shape == (100, 6) and not small.exhaustive
    torch.testing.assert_close(small.weights.sum(0), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(small.beliefs, mess3().filter(small.tokens)[0][:, 1:])
    assert subset(data, 10**6) is data


def test_shuffles_in_memory_bounded_blocks_equal_one_block():
    g = torch.Generator().manual_seed(0)
    a = _design(torch.randn(300, 4, generator=g, dtype=torch.float64))
    y = torch.randn(300, 2, generator=g, dtype=torch.float64)
    factor = torch.linalg.cholesky(a[:200].T @ a[:200])
    args = (a[:200], y[:200], a[200:], y[200:], factor, 7)
    one = _shuffled(*args, torch.Generator().manual_seed(1), max_bytes=2**40)
    blocks = _shuffled(*args, torch.Generator().manual_seed(1), max_bytes=1)  # one permutation per block
    assert one == pytest.approx(blocks)
