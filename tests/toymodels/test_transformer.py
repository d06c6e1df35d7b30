"""The hooked transformer: cache against a hand-written forward pass, causality, save/load, training
with checkpoints and resume, soft targets, and interchange with TransformerLens itself."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from groundtruth.strategies import seeds
from toymodels.training import TrainConfig, snapshots
from toymodels.transformer import (
    HookedTransformer,
    TransformerConfig,
    from_transformer_lens_state_dict,
    load_transformer,
    next_token_loss,
    save_transformer,
    to_transformer_lens,
    train_transformer,
    transformer_lens_config,
    transformer_lens_state_dict,
)

SMALL = TransformerConfig(n_layers=2, d_model=16, n_ctx=6, d_vocab=5, n_heads=2, d_mlp=32, seed=1)


def manual_forward(model: HookedTransformer, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same architecture written out head by head and position by position."""
    cfg, out = model.cfg, {}
    b, t = tokens.shape

    def normalize(x):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5)

    def ln(x, mod):
        return normalize(x) * mod.w + mod.b

    resid = model.W_E[tokens] + model.W_pos[:t]
    for layer, block in enumerate(model.blocks):
        out[f"blocks.{layer}.hook_resid_pre"] = resid
        x = ln(resid, block.ln1)
        a = block.attn
        attn_out = torch.zeros_like(resid) + a.b_O
        patterns = []
        for h in range(cfg.n_heads):
            q, k, v = (x @ getattr(a, f"W_{n}")[h] + getattr(a, f"b_{n}")[h] for n in "QKV")
            pattern = torch.zeros(b, t, t)
            for i in range(t):
                scores = torch.stack([(q[:, i] * k[:, j]).sum(-1) for j in range(i + 1)], -1) / math.sqrt(cfg.d_head)
                pattern[:, i, : i + 1] = scores.softmax(-1)
            patterns.append(pattern)
            attn_out = attn_out + (pattern @ v) @ a.W_O[h]
        out[f"blocks.{layer}.attn.hook_pattern"] = torch.stack(patterns, 1)
        resid = resid + attn_out
        out[f"blocks.{layer}.hook_resid_mid"] = resid
        post = torch.nn.functional.gelu(ln(resid, block.ln2) @ block.mlp.W_in + block.mlp.b_in)
        out[f"blocks.{layer}.mlp.hook_post"] = post
        resid = resid + post @ block.mlp.W_out + block.mlp.b_out
        out[f"blocks.{layer}.hook_resid_post"] = resid
    out["ln_final.hook_normalized"] = normalize(resid)  # before the weight and bias, as TransformerLens
    out["logits"] = ln(resid, model.ln_final) @ model.W_U + model.b_U
    return out


def perturbed(cfg: TransformerConfig, seed: int = 5, scale: float = 0.1) -> HookedTransformer:
    """A model whose biases and LayerNorm weights are not at their initial values, so the test sees them."""
    model = HookedTransformer(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


@given(st.integers(0, 2**31 - 1), st.integers(1, 6))
def test_cache_matches_manual_forward(seed, t):
    model = perturbed(SMALL)
    tokens = torch.randint(0, 5, (3, t), generator=torch.Generator().manual_seed(seed))
    logits, cache = model.run_with_cache(tokens)
    expected = manual_forward(model, tokens)
    assert set(cache) == set(model.hook_names)
    for name, value in expected.items():
        got = logits if name == "logits" else cache[name]
        torch.testing.assert_close(got, value, atol=1e-5, rtol=1e-5, msg=name)
    assert cache["hook_embed"].shape == (3, t, 16)
    torch.testing.assert_close(cache["hook_embed"] + cache["hook_pos_embed"], cache["blocks.0.hook_resid_pre"])


@given(st.integers(0, 2**31 - 1), st.integers(0, 5))
def test_positions_only_see_the_past(seed, cut):
    model = perturbed(SMALL)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 5, (2, 6), generator=g)
    other = tokens.clone()
    other[:, cut:] = torch.randint(0, 5, (2, 6 - cut), generator=g)
    torch.testing.assert_close(model(tokens)[:, :cut], model(other)[:, :cut])


def test_save_load_identical_logits(tmp_path):
    model = perturbed(SMALL)
    tokens = torch.randint(0, 5, (4, 6))
    save_transformer(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_transformer(tmp_path / "m")
    assert loaded.cfg == model.cfg
    assert torch.equal(loaded(tokens), model(tokens))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folders left behind


def test_parameter_names_follow_transformerlens():
    names = dict(HookedTransformer(SMALL).named_parameters())
    assert names["blocks.0.attn.W_Q"].shape == (2, 16, 8)
    assert names["blocks.1.attn.W_O"].shape == (2, 8, 16)
    assert names["blocks.0.mlp.W_in"].shape == (16, 32)
    assert names["W_E"].shape == (5, 16) and names["W_U"].shape == (16, 5) and names["W_pos"].shape == (6, 16)


def test_same_seed_same_weights_and_attention_only():
    a, b = HookedTransformer(SMALL), HookedTransformer(SMALL)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    attn_only = HookedTransformer(SMALL.replace(d_mlp=0, normalization_type=None))
    assert not any("mlp" in n for n in attn_only.hook_names)
    assert attn_only(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, 5)


def test_soft_targets_equal_hard_targets_when_one_hot():
    logits = torch.randn(3, 4, 5)
    targets = torch.randint(0, 5, (3, 4))
    soft = torch.nn.functional.one_hot(targets, 5).float()
    torch.testing.assert_close(next_token_loss(logits, soft), next_token_loss(logits, targets))


def copy_stream(seed: int):
    """Counting modulo 5 from a random start: after the first token, fully predictable."""
    g = torch.Generator().manual_seed(seed)
    while True:
        yield (torch.randint(0, 5, (32, 1), generator=g) + torch.arange(7)) % 5


def train_until_interrupted(model: HookedTransformer, steps: int, train: TrainConfig, checkpoint_dir) -> None:
    """Train on a stream that runs out after ``steps`` batches, as an interrupted run would stop."""
    with pytest.raises(ValueError, match="ran out"):
        batches = (b for _, b in zip(range(steps), copy_stream(0), strict=False))
        train_transformer(model, batches, train, checkpoint_dir=checkpoint_dir, progress=False)


def test_training_reduces_loss_and_resume_matches(tmp_path):
    train = TrainConfig(steps=40, lr=1e-2, checkpoint_every=10, log_every=10)
    full = HookedTransformer(SMALL)
    batch = next(copy_stream(1))
    assert next_token_loss(full(batch[:, :-1]), batch[:, 1:]) > 1.5  # about ln 5 untrained
    result = train_transformer(full, copy_stream(0), train, progress=False)
    assert result.history[-1]["loss"] < 0.1

    train_until_interrupted(HookedTransformer(SMALL), 25, train, tmp_path)
    resumed = HookedTransformer(SMALL)
    train_transformer(resumed, copy_stream(0), train, checkpoint_dir=tmp_path, progress=False)
    for (name, p), q in zip(full.named_parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("first", "then"), [("cpu", "cuda"), ("cuda", "cpu")])
def test_a_checkpoint_resumes_on_another_device(first, then, tmp_path):
    train = TrainConfig(steps=40, lr=1e-2, checkpoint_every=10, log_every=10)
    train_until_interrupted(HookedTransformer(SMALL).to(first), 25, train, tmp_path)
    resumed = HookedTransformer(SMALL).to(then)
    result = train_transformer(resumed, copy_stream(0), train, checkpoint_dir=tmp_path, progress=False)
    assert resumed.device.type == then
    assert result.samples == (40 - 20) * 32 * 6  # resumed at the step-20 checkpoint, not from scratch
    assert result.history[-1]["loss"] < 0.1


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"d_model": 0}, "d_model"),
        ({"n_heads": 3}, "divisible"),
        ({"act_fn": "tanh"}, "act_fn"),
        ({"normalization_type": "RMS"}, "normalization_type"),
    ],
)
def test_bad_config_raises(changes, match):
    with pytest.raises(ValueError, match=match):
        SMALL.replace(d_head=None, **changes)


def test_bad_tokens_raise():
    model = HookedTransformer(SMALL)
    with pytest.raises(ValueError, match="n_ctx"):
        model(torch.zeros(1, 7, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="unknown hook"):
        model.run_with_cache(torch.zeros(1, 3, dtype=torch.long), names=["blocks.9.hook_resid_post"])


def test_snapshots_keep_the_weights_at_each_interval_and_survive_resume(tmp_path):
    train = TrainConfig(steps=30, lr=1e-2, checkpoint_every=10, snapshot_every=10, log_every=10)
    model = HookedTransformer(SMALL)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    train_until_interrupted(model, 15, train, tmp_path)
    resumed = HookedTransformer(SMALL)
    train_transformer(resumed, copy_stream(0), train, checkpoint_dir=tmp_path, progress=False)
    kept = snapshots(tmp_path)
    assert [step for step, _ in kept] == [0, 10, 20, 30]
    first, last = load_file(kept[0][1]), load_file(kept[-1][1])
    assert all(torch.equal(first[k], initial[k]) for k in initial)
    assert all(torch.equal(last[k], v) for k, v in resumed.state_dict().items())
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train_transformer(HookedTransformer(SMALL), copy_stream(0), train, progress=False)


# ------------------------------------------------------------------------------------------------
# interchange with TransformerLens
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transformer_lens():
    return pytest.importorskip("transformer_lens")


@st.composite
def small_configs(draw) -> TransformerConfig:
    """Every configuration kind: 1-2 layers, 1-3 heads, with or without an MLP (attention-only) and
    LayerNorm, each activation function."""
    return TransformerConfig(
        n_layers=draw(st.integers(1, 2)),
        d_model=draw(st.integers(2, 12)),
        n_ctx=draw(st.integers(1, 6)),
        d_vocab=draw(st.integers(2, 9)),
        n_heads=draw(st.integers(1, 3)),
        d_head=draw(st.integers(1, 6)),
        d_mlp=draw(st.sampled_from([0, 1, 7, 16])),
        act_fn=draw(st.sampled_from(["gelu", "relu"])),
        normalization_type=draw(st.sampled_from(["LN", None])),
        seed=draw(seeds()),
    )


def only_ours(cfg: TransformerConfig) -> set[str]:
    """Hooks TransformerLens lacks: resid_mid of attention-only blocks, ln_final without LayerNorm."""
    names = set() if cfg.d_mlp else {f"blocks.{layer}.hook_resid_mid" for layer in range(cfg.n_layers)}
    return names | ({"ln_final.hook_normalized"} if cfg.normalization_type is None else set())


def assert_same_network(ours: HookedTransformer, theirs, tokens: torch.Tensor) -> None:
    """Same logits (max abs diff <= 1e-5) and the same activations at every hook name both have."""
    with torch.no_grad():
        logits, cache = ours.run_with_cache(tokens)
        their_logits, their_cache = theirs.run_with_cache(tokens)
    assert float((logits - their_logits).abs().max()) <= 1e-5
    shared = set(cache) & set(their_cache.keys())
    assert set(cache) - shared == only_ours(ours.cfg)
    for name in shared:
        torch.testing.assert_close(cache[name], their_cache[name], atol=1e-5, rtol=1e-5, msg=name)


@settings(max_examples=10, deadline=None)
@given(cfg=small_configs(), seed=seeds(), data=st.data())
def test_transformer_lens_runs_our_weights_to_the_same_logits_and_activations(transformer_lens, cfg, seed, data):
    model = perturbed(cfg, seed % 1000, scale=0.3)
    theirs = to_transformer_lens(model)
    assert isinstance(theirs, transformer_lens.HookedTransformer)
    assert not theirs.cfg.default_prepend_bos and theirs.cfg.positional_embedding_type == "standard"
    t = data.draw(st.integers(1, cfg.n_ctx), label="positions")
    tokens = torch.randint(0, cfg.d_vocab, (3, t), generator=torch.Generator().manual_seed(seed))
    assert_same_network(model, theirs, tokens)
    # the same through the documented manual route: a HookedTransformer(cfg) and load_state_dict
    manual = transformer_lens.HookedTransformer(
        transformer_lens.HookedTransformerConfig(**transformer_lens_config(cfg), device="cpu")
    )
    result = manual.load_state_dict(transformer_lens_state_dict(model), strict=False)
    assert not result.unexpected_keys
    assert {name.rsplit(".", 1)[-1] for name in result.missing_keys} <= {"mask", "IGNORE"}
    assert_same_network(model, manual, tokens)


@settings(max_examples=10, deadline=None)
@given(cfg=small_configs(), seed=seeds())
def test_transformer_lens_weights_load_back(transformer_lens, cfg, seed):
    """Weights drawn in TransformerLens's layout, not ours, run to the same network here."""
    lens_cfg = transformer_lens.HookedTransformerConfig(**transformer_lens_config(cfg), device="cpu")
    theirs = transformer_lens.HookedTransformer(lens_cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g) + name.endswith(".w"))  # LayerNorm weights near 1
    ours = from_transformer_lens_state_dict(theirs.state_dict(), cfg)
    tokens = torch.randint(0, cfg.d_vocab, (2, cfg.n_ctx), generator=g)
    assert_same_network(ours, theirs, tokens)
    back = transformer_lens_state_dict(ours)
    assert set(back) == {name for name, _ in theirs.named_parameters()}
    for name, value in theirs.named_parameters():
        assert torch.equal(back[name], value), name


@given(cfg=small_configs(), seed=seeds())
def test_transformer_lens_round_trip_is_exact(cfg, seed):
    model = perturbed(cfg, seed % 1000)
    back = from_transformer_lens_state_dict(transformer_lens_state_dict(model), cfg)
    kept = back.state_dict()
    for name, value in model.state_dict().items():
        if cfg.d_mlp or ".ln2." not in name:  # attention-only blocks: an unused LayerNorm, not exported
            assert torch.equal(kept[name], value), name
    tokens = torch.randint(0, cfg.d_vocab, (2, cfg.n_ctx), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(back(tokens), model(tokens))


def test_transformer_lens_weights_that_do_not_fit_raise():
    weights = transformer_lens_state_dict(perturbed(SMALL))
    with pytest.raises(ValueError, match=r"missing \['blocks.0.ln1.b'"):
        from_transformer_lens_state_dict({k: v for k, v in weights.items() if k != "blocks.0.ln1.b"}, SMALL)
    with pytest.raises(ValueError, match=r"unexpected \['blocks.0.ln1.b'"):
        from_transformer_lens_state_dict(weights, SMALL.replace(normalization_type=None))
    with pytest.raises(ValueError, match=r"blocks.0.mlp.W_in'\] has shape \(16, 32\), expected \(16, 8\)"):
        from_transformer_lens_state_dict(weights, SMALL.replace(d_mlp=8))
    with pytest.raises(TypeError, match="cfg must be a TransformerConfig"):
        from_transformer_lens_state_dict(weights, SMALL.to_dict())
    with pytest.raises(TypeError, match="state_dict must map names to tensors"):
        from_transformer_lens_state_dict({k: v.tolist() for k, v in weights.items()}, SMALL)
    with pytest.raises(TypeError, match="model must be a toymodels HookedTransformer"):
        transformer_lens_state_dict(torch.nn.Linear(2, 2))


def _scaled_by(factor: float, seen: list[str]):
    """A hook function that records the hook's name and replaces the activation by ``factor`` times it."""

    def fn(value: torch.Tensor, hook) -> torch.Tensor:
        seen.append(hook.name)
        return value * factor

    return fn


@settings(max_examples=10, deadline=None)
@given(cfg=small_configs(), seed=seeds(), data=st.data())
def test_replacing_an_activation_changes_the_logits_as_in_transformer_lens(transformer_lens, cfg, seed, data):
    """The same replacement (the activation scaled) at any hook both models have gives the same logits;
    the hook function is called once with the hook's name."""
    model = perturbed(cfg, seed % 1000, scale=0.3)
    theirs = to_transformer_lens(model)
    name = data.draw(st.sampled_from(sorted(set(model.hook_names) - only_ours(cfg))), label="hook")
    factor = data.draw(st.sampled_from([0.0, 0.5, 2.0]), label="factor")
    tokens = torch.randint(0, cfg.d_vocab, (2, cfg.n_ctx), generator=torch.Generator().manual_seed(seed))
    seen: list[str] = []
    with torch.no_grad():
        ours = model.run_with_hooks(tokens, fwd_hooks=[(name, _scaled_by(factor, seen))])
        expected = theirs.run_with_hooks(tokens, fwd_hooks=[(name, _scaled_by(factor, []))])
    assert seen == [name]
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


@settings(max_examples=10, deadline=None)
@given(cfg=small_configs(), seed=seeds(), data=st.data())
def test_hooks_that_return_nothing_or_the_same_value_leave_the_logits_unchanged(cfg, seed, data):
    """Bit for bit, except that a hook on an attention pattern makes the pattern explicit (the forward pass
    otherwise uses fused attention), which rounds differently."""
    model = perturbed(cfg, seed % 1000, scale=0.3)
    names = data.draw(st.lists(st.sampled_from(model.hook_names), min_size=1, max_size=4), label="hooks")
    tokens = torch.randint(0, cfg.d_vocab, (2, cfg.n_ctx), generator=torch.Generator().manual_seed(seed))
    fns = [lambda value, hook: None, lambda value, hook: value]
    hooks = [(name, fns[i % 2]) for i, name in enumerate(names)]
    with torch.no_grad():
        hooked, clean = model.run_with_hooks(tokens, fwd_hooks=hooks), model(tokens)
    if any(name.endswith("hook_pattern") for name in names):
        torch.testing.assert_close(hooked, clean, atol=1e-6, rtol=1e-6)
    else:
        assert torch.equal(hooked, clean)


def test_functions_at_one_hook_run_in_order_each_seeing_the_last_ones_value():
    model = perturbed(SMALL)
    tokens = torch.randint(0, SMALL.d_vocab, (2, SMALL.n_ctx), generator=torch.Generator().manual_seed(0))
    name = "blocks.0.hook_resid_post"
    with torch.no_grad():
        twice = model.run_with_hooks(tokens, fwd_hooks=[(name, _scaled_by(2.0, [])), (name, _scaled_by(3.0, []))])
        once = model.run_with_hooks(tokens, fwd_hooks=[(name, _scaled_by(6.0, []))])
    torch.testing.assert_close(twice, once)


def test_bad_hooks_are_refused_by_name():
    model = perturbed(SMALL)
    tokens = torch.zeros(1, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="'blocks.9.hook_resid_post'"):
        model.run_with_hooks(tokens, fwd_hooks=[("blocks.9.hook_resid_post", lambda v, h: None)])
    with pytest.raises(TypeError, match="must be callable"):
        model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", 3)])
    with pytest.raises(ValueError, match=r"hook 'hook_embed' must return None or a tensor of shape \(1, 3, 16\)"):
        model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", lambda v, h: v[:, :1])])
    with pytest.raises(ValueError, match="unknown hook name"):
        model.run_with_cache(tokens, names=["nope"])


def test_the_cache_holds_what_the_hooks_leave():
    """run_with_cache(fwd_hooks=...) caches the replaced activation at its hook and what follows from it later."""
    model = perturbed(SMALL)
    tokens = torch.randint(0, SMALL.d_vocab, (2, SMALL.n_ctx), generator=torch.Generator().manual_seed(0))
    first, later = "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"
    with torch.no_grad():
        clean = model.run_with_cache(tokens, [first])[1][first]
        logits, cache = model.run_with_cache(tokens, [first, later], fwd_hooks=[(first, _scaled_by(2.0, []))])
        expected = model.run_with_hooks(tokens, fwd_hooks=[(first, _scaled_by(2.0, []))])
    torch.testing.assert_close(cache[first], 2 * clean)
    torch.testing.assert_close(cache[later], cache[first])  # resid_post of block 0 is resid_pre of block 1
    assert torch.equal(logits, expected)
