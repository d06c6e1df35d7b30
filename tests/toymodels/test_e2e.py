"""End-to-end SAE objectives (toymodels.e2e): the losses against hand computations on tiny models, the
downstream positions, validation, and short training runs that lower the output term."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sae_helpers import make, perturb
from scipy.special import log_softmax

from groundtruth.strategies import seeds
from toymodels.e2e import Objective, downstream_hooks
from toymodels.sae import LossTerms, SAEConfig, StandardSAE, architectures, make_sae, train_sae
from toymodels.splice import output_kl, spliced_logits
from toymodels.superposition import ToyModel, ToyModelConfig
from toymodels.training import TrainConfig
from toymodels.transformer import HookedTransformer, TransformerConfig

CFG = TransformerConfig(n_layers=3, d_model=8, n_ctx=4, d_vocab=5, n_heads=2, d_mlp=16, seed=0)


def tiny_model(seed: int = 0, scale: float = 0.4) -> HookedTransformer:
    """A random model whose logits are far from uniform (GPT-2's 0.02 init would give KLs near 0)."""
    model = HookedTransformer(CFG.replace(seed=seed))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-1].startswith("W_"):
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def tokens(seed: int, n: int = 6) -> torch.Tensor:
    return torch.randint(0, CFG.d_vocab, (n, CFG.n_ctx), generator=torch.Generator().manual_seed(seed))


def kl_by_hand(clean: torch.Tensor, other: torch.Tensor) -> float:
    """Mean over positions of sum_v p_v (log p_v - log q_v), in float64 numpy."""
    logp = log_softmax(clean.detach().double().numpy(), axis=-1)
    logq = log_softmax(other.detach().double().numpy(), axis=-1)
    return float((np.exp(logp) * (logp - logq)).sum(-1).mean())


def standard_sae(seed: int, coefficient: float = 0.3) -> StandardSAE:
    sae = make("standard", d_in=8, d_sae=12, seed=seed % 1000, sparsity_coefficient=coefficient)
    return perturb(sae, torch.Generator().manual_seed(seed), scale=0.3)


def l1_by_hand(sae: StandardSAE, x: torch.Tensor, progress: float) -> float:
    """The standard SAE's free-decoder penalty, coefficient x warm-up x mean_n sum_i c_i ||W_dec[i]||."""
    with torch.no_grad():
        codes = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc).double()
        penalty = (codes * sae.W_dec.norm(dim=1).double()).sum(1).mean()
    return sae.cfg.sparsity_coefficient * min(1.0, progress / 0.05) * float(penalty)


@settings(max_examples=8, deadline=None)
@given(seed=seeds(), layer=st.integers(0, 2), progress=st.sampled_from([0.02, 0.5]))
def test_e2e_loss_is_sparsity_plus_kl_by_hand(seed, layer, progress):
    """e2e: the local reconstruction term is gone; the L1 term plus KL(clean ‖ spliced) remain."""
    model, batch, sae = tiny_model(seed % 100), tokens(seed), standard_sae(seed)
    hook = f"blocks.{layer}.hook_resid_post"
    objective = Objective(model, hook, "e2e")
    clean = objective.clean(batch)
    terms = objective.loss(clean, sae.training_loss(clean.x, progress))
    with torch.no_grad():
        clean_logits = model(batch)
        spliced = spliced_logits(model, batch, sae, hook)
    kl = kl_by_hand(clean_logits, spliced)
    assert kl > 1e-4  # the check can fail: the SAE changes the output
    expected = l1_by_hand(sae, clean.x, progress) + kl
    assert float(terms.total.detach()) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert terms.parts["output"] == pytest.approx(kl, rel=1e-4, abs=1e-7)


@settings(max_examples=8, deadline=None)
@given(seed=seeds(), hook=st.sampled_from(["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"]))
def test_e2e_ds_adds_the_downstream_residual_error_by_hand(seed, hook):
    """e2e+ds: 0.5 KL + 2.5 x the mean over later resid_pre positions of the elementwise mean squared error
    between the spliced and the clean residual stream (the paper's coefficients)."""
    model, batch, sae = tiny_model(seed % 100), tokens(seed), standard_sae(seed)
    objective = Objective(model, hook, "e2e+ds")
    later = (
        ["blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"] if hook.endswith("pre") else ["blocks.2.hook_resid_pre"]
    )
    assert objective.downstream == later
    clean = objective.clean(batch)
    terms = objective.loss(clean, sae.training_loss(clean.x, 0.5))
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(batch, later)
        seen = {}
        logits = model.run_with_hooks(
            batch,
            [(hook, lambda a, h: sae.decode(sae.encode(a)))]
            + [(n, lambda a, h: seen.__setitem__(h.name, a)) for n in later],
        )
    errors = [((seen[n].double() - clean_cache[n].double()) ** 2).mean().item() for n in later]
    ds = sum(errors) / len(errors)
    assert ds > 1e-6
    expected = l1_by_hand(sae, clean.x, 0.5) + 0.5 * kl_by_hand(model(batch), logits) + 2.5 * ds
    assert float(terms.total.detach()) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert terms.parts["downstream"] == pytest.approx(ds, rel=1e-4)


def test_toy_model_e2e_is_the_output_squared_error_by_hand():
    """For the toy model the output term is sum_f (ReLU(h W + b) - ReLU(h_hat W + b))_f^2, averaged over samples."""
    model = ToyModel(ToyModelConfig(n_features=6, d_hidden=3, seed=2))
    with torch.no_grad():
        model.b.copy_(torch.linspace(-0.2, 0.2, 6))
    h = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))
    sae = perturb(make("standard", d_in=3, d_sae=7, sparsity_coefficient=0.1), torch.Generator().manual_seed(3), 0.3)
    objective = Objective(model, None, "e2e")
    terms = objective.loss(objective.clean(h), sae.training_loss(h, 1.0))
    W, b = model.W.detach().double().numpy(), model.b.detach().double().numpy()
    with torch.no_grad():
        h_hat = sae(h).double().numpy()
    out, out_hat = np.maximum(h.double().numpy() @ W + b, 0), np.maximum(h_hat @ W + b, 0)
    mse = float(((out - out_hat) ** 2).sum(1).mean())
    assert mse > 1e-4
    assert float(terms.total.detach()) == pytest.approx(l1_by_hand(sae, h, 1.0) + mse, rel=1e-4)


def test_local_objective_is_the_architecture_loss_on_the_models_activations():
    model, batch, sae = tiny_model(1), tokens(1), standard_sae(1)
    objective = Objective(model, "blocks.1.hook_resid_mid", "local")
    clean = objective.clean(batch)
    _, cache = model.run_with_cache(batch, ["blocks.1.hook_resid_mid"])
    assert torch.equal(clean.x, cache["blocks.1.hook_resid_mid"].reshape(-1, 8))
    own = sae.training_loss(clean.x, 0.5)
    assert objective.loss(clean, own) is own


def test_downstream_hooks_skip_the_position_equal_to_the_saes_output():
    model = HookedTransformer(CFG.replace(n_layers=4))
    assert downstream_hooks(model, "blocks.1.hook_resid_pre") == [f"blocks.{k}.hook_resid_pre" for k in (2, 3)]
    assert downstream_hooks(model, "blocks.1.mlp.hook_post") == [f"blocks.{k}.hook_resid_pre" for k in (2, 3)]
    assert downstream_hooks(model, "blocks.1.hook_resid_post") == ["blocks.3.hook_resid_pre"]
    assert downstream_hooks(model, "hook_embed") == [f"blocks.{k}.hook_resid_pre" for k in (1, 2, 3)]
    assert downstream_hooks(model, "blocks.3.hook_resid_pre") == []
    assert downstream_hooks(model, "ln_final.hook_normalized") == []


def test_objectives_are_validated_with_clear_errors():
    model, toy = tiny_model(), ToyModel(ToyModelConfig())
    with pytest.raises(ValueError, match="objective must be one of .*'e2e-ds'"):
        Objective(model, "blocks.0.hook_resid_post", "e2e-ds")
    with pytest.raises(ValueError, match="hook must name .*'blocks.9.hook_resid_post'"):
        Objective(model, "blocks.9.hook_resid_post")
    with pytest.raises(ValueError, match="hook must name .*hook_pattern"):
        Objective(model, "blocks.0.attn.hook_pattern")
    with pytest.raises(ValueError, match="'e2e\\+ds' needs a residual position after hook 'blocks.1.hook_resid_post'"):
        Objective(model, "blocks.1.hook_resid_post", "e2e+ds")
    with pytest.raises(ValueError, match="'e2e\\+ds' needs layers after the SAE; a ToyModel"):
        Objective(toy, None, "e2e+ds")
    with pytest.raises(ValueError, match="hook must be None for a ToyModel.*'hidden'"):
        Objective(toy, "hidden")
    with pytest.raises(TypeError, match="model must be a HookedTransformer or a ToyModel, got Linear"):
        Objective(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="output_coefficient"):
        Objective(toy, output_coefficient=-1.0)
    with pytest.raises(ValueError, match="downstream_coefficient"):
        Objective(toy, downstream_coefficient=math.nan)
    with pytest.raises(TypeError, match="integer token tensors"):
        Objective(model, "blocks.0.hook_resid_post").clean(torch.zeros(2, 3))


def test_an_sae_without_x_hat_cannot_train_end_to_end():
    objective = Objective(ToyModel(ToyModelConfig()))
    clean = objective.clean(torch.ones(4, 2))
    bare = LossTerms(torch.tensor(1.0), torch.tensor(1.0), torch.zeros(4, 3))
    with pytest.raises(TypeError, match="x_hat and reconstruction"):
        objective.loss(clean, bare)


def token_stream(seed: int, n: int = 16):
    g = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randint(0, CFG.d_vocab, (n, CFG.n_ctx), generator=g)


def spliced_kl(model, sae, hook, batch) -> float:
    with torch.no_grad():
        return float(output_kl(model(batch), spliced_logits(model, batch, sae, hook)))


@pytest.mark.parametrize("objective", ["e2e", "e2e+ds"])
def test_short_e2e_training_lowers_the_kl_and_leaves_the_model_alone(objective):
    model, hook = tiny_model(3), "blocks.0.hook_resid_post"
    before_weights = {k: v.clone() for k, v in model.state_dict().items()}
    sae = make_sae(SAEConfig("standard", 8, 24, sparsity_coefficient=1e-3, seed=0))
    held_out = tokens(99, 64)
    before = spliced_kl(model, sae, hook, held_out)
    result = train_sae(
        sae,
        token_stream(0),
        TrainConfig(steps=150, lr=1e-2, log_every=50),
        progress=False,
        objective=Objective(model, hook, objective),
    )
    after = spliced_kl(model, sae, hook, held_out)
    assert after < 0.5 * before, (before, after)
    assert "output" in result.history[-1] and ("downstream" in result.history[-1]) == (objective == "e2e+ds")
    for name, value in model.state_dict().items():
        assert torch.equal(value, before_weights[name]), name
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_short_e2e_training_lowers_the_toy_models_output_error():
    model = ToyModel(ToyModelConfig(n_features=8, d_hidden=3, seed=0))
    g = torch.Generator().manual_seed(0)
    stream = (torch.randn(64, 3, generator=g) for _ in iter(int, 1))
    h = torch.randn(256, 3, generator=torch.Generator().manual_seed(1))
    objective = Objective(model)
    sae = make_sae(SAEConfig("standard", 3, 16, sparsity_coefficient=1e-3, seed=0))

    def error() -> float:
        with torch.no_grad():
            return float(((model.output(h) - model.output(sae(h))) ** 2).sum(1).mean())

    before = error()
    train_sae(sae, stream, TrainConfig(steps=150, lr=1e-2), progress=False, objective=objective)
    assert error() < 0.5 * before


@pytest.mark.parametrize("arch", architectures())
@pytest.mark.parametrize("objective", ["local", "e2e", "e2e+ds"])
def test_every_architecture_trains_under_every_objective(arch, objective):
    """Every architecture but Matryoshka, which has no single local term to swap and is refused by name."""
    model = tiny_model(0)
    sae = make_sae(SAEConfig(arch, 8, 16, k=2, sparsity_coefficient=1e-2, seed=0))
    if arch == "matryoshka_batchtopk" and objective != "local":
        with pytest.raises(TypeError, match="Matryoshka"):
            train_sae(sae, token_stream(1), TrainConfig(steps=2), progress=False,
                      objective=Objective(model, "blocks.0.hook_resid_pre", objective))  # fmt: skip
        return
    result = train_sae(
        sae,
        token_stream(1),
        TrainConfig(steps=6, lr=1e-3, log_every=3),
        progress=False,
        objective=Objective(model, "blocks.0.hook_resid_pre", objective),
    )
    assert len(result.history) == 2 and all(math.isfinite(row["loss"]) for row in result.history)
    assert result.samples == 6 * 16 * CFG.n_ctx  # SAE inputs: every position of every sequence
    assert all(torch.isfinite(p).all() for p in sae.parameters())


class Interrupted(Exception):
    pass


def interrupted_after(stream, n: int):
    for i, batch in enumerate(stream):
        if i == n:
            raise Interrupted
        yield batch


def test_e2e_training_resumes_from_its_checkpoint_to_identical_weights(tmp_path):
    model, cfg = tiny_model(2), SAEConfig("topk", 8, 16, k=3, dead_after=4, seed=1)
    train = TrainConfig(steps=10, lr=1e-2, checkpoint_every=4, log_every=1)
    objective = Objective(model, "blocks.1.hook_resid_pre", "e2e+ds")
    reference = make_sae(cfg)
    train_sae(reference, token_stream(5), train, progress=False, objective=objective)
    with pytest.raises(Interrupted):
        train_sae(
            make_sae(cfg),
            interrupted_after(token_stream(5), 6),
            train,
            checkpoint_dir=tmp_path,
            progress=False,
            objective=objective,
        )
    resumed = make_sae(cfg)
    train_sae(resumed, token_stream(5), train, checkpoint_dir=tmp_path, progress=False, objective=objective)
    for name, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_a_checkpoint_of_another_objective_is_refused_not_resumed(tmp_path):
    """The objective is part of a run's identity: a local run's checkpoint does not become an e2e run's."""
    model = HookedTransformer(TransformerConfig(n_layers=2, d_model=8, n_ctx=4, d_vocab=5, d_mlp=16, seed=0))
    hook = "blocks.0.hook_resid_post"
    tokens = torch.randint(0, 5, (8, 4), generator=torch.Generator().manual_seed(0))
    train = TrainConfig(steps=2, lr=1e-3)
    cfg = SAEConfig("topk", 8, 16, k=2, seed=0)
    train_sae(make_sae(cfg), itertools.repeat(tokens), train, checkpoint_dir=tmp_path, progress=False,
              objective=Objective(model, hook, "local"))  # fmt: skip
    with pytest.raises(ValueError, match="written for a different run.*'objective': 'local'"):
        train_sae(make_sae(cfg), itertools.repeat(tokens), train, checkpoint_dir=tmp_path, progress=False,
                  objective=Objective(model, hook, "e2e"))  # fmt: skip
    resumed = train_sae(make_sae(cfg), itertools.repeat(tokens), train, checkpoint_dir=tmp_path, progress=False,
                        objective=Objective(model, hook, "local"))  # fmt: skip
    assert resumed.steps == 2


@settings(max_examples=8, deadline=None)
@given(seed=seeds(), pad=st.integers(0, CFG.d_vocab - 1))
def test_padded_positions_are_left_out_of_the_sae_and_the_loss(seed, pad):
    """With ``pad``, the SAE reads and replaces only the positions whose input is not ``pad``, and the KL
    averages over those positions only: by hand, a splice that keeps padded activations clean."""
    model, batch, sae = tiny_model(seed % 100), tokens(seed, n=8), standard_sae(seed)
    real = batch != pad
    hook = "blocks.0.hook_resid_post"
    objective = Objective(model, hook, "e2e", pad=pad)
    clean = objective.clean(batch)
    assert clean.x.shape == (int(real.sum()), CFG.d_model)
    terms = objective.loss(clean, sae.training_loss(clean.x, 0.5))

    def splice_real(activation, hook):
        return torch.where(real[..., None], sae.decode(sae.encode(activation)), activation)

    with torch.no_grad():
        clean_logits, spliced = model(batch), model.run_with_hooks(batch, [(hook, splice_real)])
    kl = kl_by_hand(clean_logits[real], spliced[real])
    assert float(terms.total.detach()) == pytest.approx(l1_by_hand(sae, clean.x, 0.5) + kl, rel=1e-4, abs=1e-6)
    assert objective.identity()["pad"] == pad
    with pytest.raises(ValueError, match="pad must be None"):
        Objective(ToyModel(ToyModelConfig()), None, "e2e", pad=0)
