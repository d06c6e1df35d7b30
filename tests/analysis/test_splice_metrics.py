"""Downstream metrics of a spliced SAE: checked against hand computations on a model small enough to work out
on paper, against brute force (the activation replaced by hand), against SAELens's own evaluation code on the
same network in TransformerLens, and by their invariants (the identity recovers everything, zeros are
zero-ablation, batches and sequence order change nothing)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from stand_ins import Affine

from analysis.metrics.beliefs import belief_regression
from analysis.metrics.splice import loss_recovered, splice_scores, spliced_belief_r2, toy_splice_scores
from groundtruth.processes import process
from groundtruth.strategies import seeds
from toymodels.sae import SAEConfig, make_sae, save_sae
from toymodels.superposition import ToyModel, ToyModelConfig, importances, sample_features
from toymodels.transformer import HookedTransformer, TransformerConfig

CFG = TransformerConfig(n_layers=2, d_model=8, n_ctx=6, d_vocab=4, n_heads=2, d_mlp=16, seed=3)
HOOKS = ["hook_embed", "blocks.0.hook_resid_mid", "blocks.0.mlp.hook_post", "blocks.1.hook_resid_post"]


def random_model(seed: int) -> HookedTransformer:
    """A model with random weights big enough that every hook matters (GPT-2's init is nearly uniform)."""
    model = HookedTransformer(CFG.replace(seed=seed % 1000))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def random_tokens(seed: int, b: int = 5, t: int = CFG.n_ctx + 1) -> torch.Tensor:
    return torch.randint(0, CFG.d_vocab, (b, t), generator=torch.Generator().manual_seed(seed + 1))


# ------------------------------------------------------------------------------------------------
# hand computation on a model worked out on paper
# ------------------------------------------------------------------------------------------------

L = 2.0  # the clean logit of "the next token repeats this one"


def paper_model() -> HookedTransformer:
    """One block, no LayerNorm, attention and output biases zero, no MLP: resid_post = W_E[x] = L·e_x and the
    logits are resid_post itself (W_U = I), so p(next = x) = e^L / (e^L + 1)."""
    model = HookedTransformer(
        TransformerConfig(n_layers=1, d_model=2, n_ctx=3, d_vocab=2, d_mlp=0, normalization_type=None)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_E.copy_(L * torch.eye(2))
        model.W_U.copy_(torch.eye(2))
    return model


PAPER_TOKENS = torch.tensor([[0, 0, 1], [1, 1, 1], [0, 1, 0], [1, 0, 0]])


def ce(logits: tuple[float, float], target: int) -> float:
    return math.log(math.exp(logits[0]) + math.exp(logits[1])) - logits[target]


def kl(p_logits: tuple[float, float], q_logits: tuple[float, float]) -> float:
    p = [math.exp(v - math.log(sum(math.exp(u) for u in p_logits))) for v in p_logits]
    q = [math.exp(v - math.log(sum(math.exp(u) for u in q_logits))) for v in q_logits]
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def by_hand(scale: float, counted) -> dict[str, float]:
    """The metrics worked out from the model's definition, position by position."""
    clean, sae, zero, mean, kl_sae, kl_zero, kl_mean = ([] for _ in range(7))
    for pos in range(2):
        inputs = [int(row[pos]) for row in PAPER_TOKENS]
        n = len(inputs)
        m = (L * inputs.count(0) / n, L * inputs.count(1) / n)  # the mean of L·e_x at this position over all rows
        if counted is not None:  # the mean runs over the counted rows only
            rows = [r for r in range(n) if counted(int(PAPER_TOKENS[r, pos + 1]))]
            m = tuple(sum(L * (int(PAPER_TOKENS[r, pos]) == k) for r in rows) / max(1, len(rows)) for k in (0, 1))
        for row in PAPER_TOKENS:
            x, y = int(row[pos]), int(row[pos + 1])
            if counted is not None and not counted(y):
                continue
            own = (L * (x == 0), L * (x == 1))
            scaled = (scale * own[0], scale * own[1])
            clean.append(ce(own, y)), sae.append(ce(scaled, y)), zero.append(ce((0.0, 0.0), y))
            mean.append(ce(m, y)), kl_sae.append(kl(own, scaled)), kl_zero.append(kl(own, (0.0, 0.0)))
            kl_mean.append(kl(own, m))
    avg = lambda v: sum(v) / len(v)  # noqa: E731
    return {
        "ce_loss_without_sae": avg(clean),
        "ce_loss_with_sae": avg(sae),
        "ce_loss_with_ablation": avg(zero),
        "ce_loss_with_mean_ablation": avg(mean),
        "ce_loss_score": (avg(zero) - avg(sae)) / (avg(zero) - avg(clean)),
        "ce_loss_score_mean_ablation": (avg(mean) - avg(sae)) / (avg(mean) - avg(clean)),
        "kl_div_with_sae": avg(kl_sae),
        "kl_div_with_ablation": avg(kl_zero),
        "kl_div_with_mean_ablation": avg(kl_mean),
        "kl_div_score": (avg(kl_zero) - avg(kl_sae)) / avg(kl_zero),
        "kl_div_score_mean_ablation": (avg(kl_mean) - avg(kl_sae)) / avg(kl_mean),
        "n_positions": len(clean),
    }


@pytest.mark.parametrize("scale", [0.5, 1.5])
@pytest.mark.parametrize("pad", [None, 1])
def test_every_score_is_the_hand_computation(scale, pad):
    scores = splice_scores(paper_model(), Affine(scale), PAPER_TOKENS, "blocks.0.hook_resid_post", pad=pad)
    expected = by_hand(scale, None if pad is None else (lambda y: y != pad))
    assert scores["n_positions"] == expected["n_positions"] == (8 if pad is None else 4)
    assert scores == pytest.approx(expected, rel=1e-5)


def test_loss_recovered_is_the_saebench_fraction_and_nan_when_ablation_costs_nothing():
    assert loss_recovered(1.0, 1.5, 3.0) == pytest.approx(0.75)
    assert loss_recovered(1.0, 1.0, 3.0) == 1.0 and loss_recovered(1.0, 3.0, 3.0) == 0.0
    assert loss_recovered(0.0, 0.2, 0.8) == pytest.approx(0.75)  # SAEBench's kl_div_score
    assert math.isnan(loss_recovered(2.0, 2.5, 2.0))


# ------------------------------------------------------------------------------------------------
# invariants
# ------------------------------------------------------------------------------------------------


@settings(max_examples=8, deadline=None)
@given(seed=seeds(), hook=st.sampled_from(HOOKS), pad=st.sampled_from([None, 0]))
def test_the_identity_recovers_all_the_loss_and_zeros_are_zero_ablation(seed, hook, pad):
    model, tokens = random_model(seed), random_tokens(seed)
    tokens[:, -2:] = 0  # padding at the end where pad = 0
    identity = splice_scores(model, Affine(1.0), tokens, hook, pad=pad)
    assert identity["ce_loss_with_sae"] == identity["ce_loss_without_sae"]
    assert identity["kl_div_with_sae"] == 0.0
    for key in ("ce_loss_score", "ce_loss_score_mean_ablation", "kl_div_score", "kl_div_score_mean_ablation"):
        assert identity[key] == pytest.approx(1.0, abs=1e-12)
    zeros = splice_scores(model, Affine(0.0), tokens, hook, pad=pad)
    assert zeros["ce_loss_with_sae"] == zeros["ce_loss_with_ablation"]
    assert zeros["kl_div_with_sae"] == zeros["kl_div_with_ablation"]
    assert zeros["ce_loss_score"] == pytest.approx(0.0, abs=1e-12) and zeros["kl_div_score"] == 0.0
    expected = tokens[:, 1:].numel() if pad is None else int((tokens[:, 1:] != pad).sum())
    assert identity["n_positions"] == zeros["n_positions"] == expected


@settings(max_examples=8, deadline=None)
@given(
    seed=seeds(),
    hook=st.sampled_from(HOOKS),
    batch_size=st.integers(1, 7),
    scale=st.floats(0.0, 2.0),
    pad=st.sampled_from([None, 0]),
)
def test_scores_do_not_depend_on_batches_or_sequence_order(seed, hook, batch_size, scale, pad):
    model, tokens = random_model(seed), random_tokens(seed, b=7)
    sae = Affine(scale, 0.1)
    whole = splice_scores(model, sae, tokens, hook, batch_size=64, pad=pad)
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed))
    batched = splice_scores(model, sae, tokens[order], hook, batch_size=batch_size, pad=pad)
    losses = {key: value for key, value in whole.items() if "score" not in key}
    assert {key: batched[key] for key in losses} == pytest.approx(losses, rel=1e-5, abs=1e-7)
    # A score divides by what the ablation costs, which can be tiny at a random model's embedding: the
    # losses' rounding (another batching sums in another order) is what the scores may differ by, scaled.
    for score, (low, high) in {
        "ce_loss_score": ("ce_loss_without_sae", "ce_loss_with_ablation"),
        "ce_loss_score_mean_ablation": ("ce_loss_without_sae", "ce_loss_with_mean_ablation"),
        "kl_div_score": (None, "kl_div_with_ablation"),
        "kl_div_score_mean_ablation": (None, "kl_div_with_mean_ablation"),
    }.items():
        cost = whole[high] - (whole[low] if low else 0.0)
        tolerance = 1e-5 * max(1.0, abs(whole["ce_loss_with_sae"])) / max(abs(cost), 1e-12)
        assert batched[score] == pytest.approx(whole[score], abs=max(tolerance, 1e-9), nan_ok=True), score


@settings(max_examples=6, deadline=None)
@given(seed=seeds(), hook=st.sampled_from(HOOKS))
def test_the_ablations_are_the_activation_replaced_by_hand(seed, hook):
    """Brute force: zero- and per-position mean-ablation run by hand, scored with plain cross-entropy."""
    model, tokens = random_model(seed), random_tokens(seed, b=6)
    tokens[:3, 4:] = 0
    counted = tokens[:, 1:] != 0
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    with torch.no_grad():
        act = model.run_with_cache(inputs, names=[hook])[1][hook]
        mean = torch.stack([act[counted[:, p], p].mean(0) for p in range(inputs.shape[1])])
        logits = {
            "": model(inputs),
            "ablation": model.run_with_hooks(inputs, fwd_hooks=[(hook, lambda v, h: v * 0)]),
            "mean_ablation": model.run_with_hooks(inputs, fwd_hooks=[(hook, lambda v, h: mean.expand_as(v))]),
        }
    scores = splice_scores(model, Affine(0.5), tokens, hook, batch_size=4, pad=0)
    clean_logp = logits[""][counted].double().log_softmax(-1)
    for name in ("ablation", "mean_ablation"):
        logp = logits[name][counted].double().log_softmax(-1)
        ce = F.nll_loss(logp, targets[counted])
        kl = (clean_logp.exp() * (clean_logp - logp)).sum(-1).mean()
        assert scores[f"ce_loss_with_{name}"] == pytest.approx(float(ce), rel=1e-5)
        assert scores[f"kl_div_with_{name}"] == pytest.approx(float(kl), rel=1e-4, abs=1e-7)


# ------------------------------------------------------------------------------------------------
# SAELens: the same SAE loaded there scores the same, and SAELens's evaluation agrees
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_topk(tmp_path_factory):
    """One of our TopK SAEs with weights moved off their init, and its folder."""
    sae = make_sae(SAEConfig("topk", CFG.d_model, 24, k=4, seed=0))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    path = save_sae(sae, tmp_path_factory.mktemp("sae") / "topk")
    return sae, path


def test_a_saelens_sae_with_our_weights_scores_the_same(trained_topk):
    sae_lens = pytest.importorskip("sae_lens")
    ours, path = trained_topk
    theirs = sae_lens.SAE.load_from_disk(path)
    model, tokens = random_model(11), random_tokens(11, b=9)
    hook = "blocks.0.hook_resid_post"
    mine = splice_scores(model, ours, tokens, hook, batch_size=4)
    assert splice_scores(model, theirs, tokens, hook, batch_size=4) == pytest.approx(mine, rel=1e-5, abs=1e-7)
    assert mine["kl_div_with_sae"] > 1e-3  # a real, imperfect reconstruction


def test_saelens_evaluation_code_gives_the_same_scores(trained_topk):
    """SAELens's ``get_recons_loss`` (what SAEBench's core eval runs) on the same network in TransformerLens."""
    sae_lens = pytest.importorskip("sae_lens")
    pytest.importorskip("transformer_lens")
    from sae_lens.evals import get_recons_loss
    from sae_lens.training.activation_scaler import ActivationScaler

    from toymodels.transformer import to_transformer_lens

    _, path = trained_topk
    theirs = sae_lens.SAE.load_from_disk(path)
    model = random_model(12)
    tokens = random_tokens(12, b=8, t=CFG.n_ctx)  # TransformerLens reads every token: at most n_ctx
    hook = "blocks.1.hook_resid_mid"
    with torch.no_grad():
        per_token = get_recons_loss(
            theirs, to_transformer_lens(model), ActivationScaler(), tokens, True, True, hook_name=hook
        )
    # Its CE is per position with a next token; its KL also at the last position, which we do not score.
    means = {name: float(v[:, : tokens.shape[1] - 1].mean()) for name, v in per_token.items()}
    scores = splice_scores(model, theirs, tokens, hook)
    for name in ("ce_loss_without_sae", "ce_loss_with_sae", "ce_loss_with_ablation", "kl_div_with_sae"):
        assert scores[name] == pytest.approx(means[name], rel=1e-4), name
    assert scores["kl_div_with_ablation"] == pytest.approx(means["kl_div_with_ablation"], rel=1e-4)
    expected = loss_recovered(means["ce_loss_without_sae"], means["ce_loss_with_sae"], means["ce_loss_with_ablation"])
    assert scores["ce_loss_score"] == pytest.approx(expected, rel=1e-4)


# ------------------------------------------------------------------------------------------------
# belief R² downstream of the splice
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mess3_data():
    sample = process("mess3").sample(120, CFG.n_ctx, torch.Generator().manual_seed(0))
    model = HookedTransformer(CFG.replace(d_vocab=3, n_layers=3))
    return model, sample.tokens, sample.latents


def test_belief_r2_downstream_is_the_regression_on_each_later_layer(mess3_data):
    model, tokens, beliefs = mess3_data
    hook = "blocks.0.hook_resid_post"
    zero = lambda v, h: v * 0  # noqa: E731
    scores = spliced_belief_r2(model, Affine(0.0), tokens, beliefs, hook, batch_size=32, seed=5)
    assert list(scores) == ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]
    with torch.no_grad():
        clean = model.run_with_cache(tokens)[1]
        ablated = {}
        model.run_with_hooks(
            tokens, fwd_hooks=[(hook, zero)] + [(n, lambda v, h: ablated.__setitem__(h.name, v)) for n in scores]
        )
    for name, r2 in scores.items():
        assert r2["clean"] == pytest.approx(belief_regression(clean[name], beliefs, seed=5).r2, rel=1e-6)
        assert r2["spliced"] == pytest.approx(belief_regression(ablated[name], beliefs, seed=5).r2, rel=1e-6)
    identity = spliced_belief_r2(model, Affine(1.0), tokens, beliefs, hook, seed=5)
    assert all(r2["spliced"] == r2["clean"] for r2 in identity.values())
    assert spliced_belief_r2(model, Affine(1.0), tokens, beliefs, "blocks.2.hook_resid_post") == {}


# ------------------------------------------------------------------------------------------------
# the toy model of superposition
# ------------------------------------------------------------------------------------------------


@settings(max_examples=8, deadline=None)
@given(seed=seeds(), scale=st.floats(0.0, 2.0), batch_size=st.integers(1, 50))
def test_toy_loss_recovered_is_the_hand_computation(seed, scale, batch_size):
    cfg = ToyModelConfig(n_features=6, d_hidden=3, feature_probability=0.3, seed=seed % 1000)
    model = ToyModel(cfg)
    with torch.no_grad():
        model.b.copy_(torch.linspace(-0.2, 0.3, 6))
    x = sample_features(40, cfg, torch.Generator().manual_seed(seed))
    scores = toy_splice_scores(model, Affine(scale), x, batch_size=batch_size)
    weights = importances(cfg).double()
    with torch.no_grad():
        h = x @ model.W.T

        def loss(h_new):
            return float(((x - torch.relu(h_new @ model.W + model.b)).double() ** 2 @ weights).mean())

        expected = {
            "loss_without_sae": loss(h),
            "loss_with_sae": loss(scale * h),
            "loss_with_ablation": loss(torch.zeros_like(h)),
            "loss_with_mean_ablation": loss(h.mean(0).expand_as(h)),
        }
    assert {k: scores[k] for k in expected} == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert scores["loss_score"] == pytest.approx(
        loss_recovered(expected["loss_without_sae"], expected["loss_with_sae"], expected["loss_with_ablation"]),
        rel=1e-4,
        nan_ok=True,
    )
    identity = toy_splice_scores(model, Affine(1.0), x)
    assert identity["loss_with_sae"] == identity["loss_without_sae"]
    assert identity["loss_score"] == 1.0 or math.isnan(identity["loss_score"])
    zeros = toy_splice_scores(model, Affine(0.0), x)
    assert zeros["loss_with_sae"] == zeros["loss_with_ablation"]


# ------------------------------------------------------------------------------------------------
# bad arguments
# ------------------------------------------------------------------------------------------------


class OnMeta(Affine):
    W_dec = torch.zeros(3, CFG.d_model, device="meta")


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"model": torch.nn.Linear(2, 2)}, TypeError, "model must be a HookedTransformer"),
        ({"sae": torch.nn.Linear(2, 2)}, TypeError, "sae must have encode and decode"),
        ({"sae": OnMeta(1.0)}, ValueError, "sae must be on the model's device cpu, got meta"),
        ({"tokens": torch.zeros(2, 4)}, TypeError, "tokens must be integer"),
        ({"tokens": torch.zeros(2, 4, dtype=torch.long)[0]}, ValueError, "tokens must be 2-D"),
        ({"tokens": torch.zeros(2, CFG.n_ctx + 2, dtype=torch.long)}, ValueError, r"tokens must be \[b >= 1, 2 <= t"),
        ({"tokens": torch.zeros(2, 1, dtype=torch.long)}, ValueError, r"tokens must be \[b >= 1, 2 <= t <= 7\]"),
        ({"tokens": torch.full((2, 3), CFG.d_vocab)}, ValueError, r"tokens must lie in \[0, d_vocab=4\)"),
        ({"hook": "blocks.9.hook_resid_post"}, ValueError, "hook must be a per-position hook"),
        ({"hook": "blocks.0.attn.hook_pattern"}, ValueError, "'blocks.0.attn.hook_pattern'"),
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1, got 0"),
        ({"pad": 4}, ValueError, r"pad must be an integer in \[0, 3\], got 4"),
        ({"pad": 1, "tokens": torch.ones(2, 3, dtype=torch.long)}, ValueError, "no position whose next token"),
    ],
)
def test_bad_arguments_are_named(change, error, match):
    args = {"model": random_model(0), "sae": Affine(1.0), "tokens": random_tokens(0), "hook": "hook_embed"}
    options = {key: change.pop(key) for key in ("batch_size", "pad") if key in change}
    with pytest.raises(error, match=match):
        splice_scores(**(args | change), **options)


def test_bad_belief_and_toy_arguments_are_named(mess3_data):
    model, tokens, beliefs = mess3_data
    with pytest.raises(ValueError, match=r"beliefs must be \[b, t, S\] with tokens' \[b, t\]"):
        spliced_belief_r2(model, Affine(1.0), tokens, beliefs[:, :-1], "hook_embed")
    with pytest.raises(ValueError, match="beliefs must be 3-D"):
        spliced_belief_r2(model, Affine(1.0), tokens, beliefs[..., 0], "hook_embed")
    toy = ToyModel(ToyModelConfig(n_features=5, d_hidden=2))
    with pytest.raises(TypeError, match="model must be a ToyModel"):
        toy_splice_scores(model, Affine(1.0), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"features must be \[n >= 1, n_features=5\], got \(3, 4\)"):
        toy_splice_scores(toy, Affine(1.0), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="features must be 2-D"):
        toy_splice_scores(toy, Affine(1.0), torch.zeros(5))


def test_the_readme_example_runs_and_says_what_it_prints():
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = readme.split("## Splicing metrics")[1].split("```python")[1].split("```")[0]
    scope: dict = {}
    exec(code, scope)
    scores, r2 = scope["scores"], scope["r2"]
    # as printed there, give or take another machine's training of the SAE
    assert scores["ce_loss_score"] == pytest.approx(0.9991, abs=3e-4)
    assert scores["kl_div_with_sae"] == pytest.approx(0.0002, abs=1e-4)
    assert list(r2) == ["blocks.2.hook_resid_post", "blocks.3.hook_resid_post"]
    final = r2["blocks.3.hook_resid_post"]
    assert final["clean"] == pytest.approx(0.9989, abs=1e-4) and final["spliced"] == pytest.approx(0.9977, abs=1e-3)
