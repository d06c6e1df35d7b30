"""Tests of the SAE training loop (toymodels.sae.training): it learns, it resumes exactly, it validates."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sae_helpers import make

from analysis.metrics.recovery import mcc
from toymodels import training
from toymodels.sae import SAEConfig, SparseAutoencoder, architectures, make_sae
from toymodels.sae.training import Trainer, train_sae, train_saes
from toymodels.training import TrainConfig


def orthogonal_features(n_features: int, d: int, seed: int) -> torch.Tensor:
    """``n_features`` orthonormal directions in ``d`` dimensions: [F, d]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    return q[:n_features].contiguous()


def one_hot_stream(dirs: torch.Tensor, seed: int, n: int = 64) -> Iterator[torch.Tensor]:
    """Endless batches in which each sample is one feature direction with magnitude in [0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        idx = torch.randint(dirs.shape[0], (n,), generator=g)
        yield (torch.rand(n, generator=g) + 0.5).unsqueeze(1) * dirs[idx]


def gaussian_stream(seed: int, n: int = 32, d: int = 8) -> Iterator[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randn(n, d, generator=g)


class Interrupted(Exception):
    pass


def interrupt_after(batches: Iterator[torch.Tensor], m: int) -> Iterator[torch.Tensor]:
    for i, batch in enumerate(batches):
        if i == m:
            raise Interrupted(f"killed after {m} batches")
        yield batch


@torch.no_grad()
def eval_mse(sae: SparseAutoencoder, x: torch.Tensor) -> float:
    return float((sae(x) - x).pow(2).sum(-1).mean())


# ------------------------------------------------------------------------------------------------
# learning
# ------------------------------------------------------------------------------------------------

FIT_SETTINGS = {  # sparsity weights small enough that the fit is not dominated by the penalty
    "standard": {"sparsity_coefficient": 0.02},
    "topk": {"k": 1},
    "batchtopk": {"k": 1},
    "jumprelu": {"sparsity_coefficient": 0.002, "jump_init_threshold": 0.05, "jump_bandwidth": 0.05},
    "gated": {"sparsity_coefficient": 0.02},
    "matryoshka_batchtopk": {"k": 1},
    "p_anneal": {"sparsity_coefficient": 0.02},
    "matching_pursuit": {"k": 1},
}


@pytest.mark.parametrize("arch", architectures())
def test_training_reduces_mse_on_fittable_data(arch):
    dirs = orthogonal_features(8, 16, seed=1)
    sae = make(arch, d_in=16, d_sae=16, seed=4, **FIT_SETTINGS[arch])
    held_out = next(one_hot_stream(dirs, seed=99, n=256))
    before = eval_mse(sae.eval(), held_out)
    result = train_sae(sae, one_hot_stream(dirs, seed=2), TrainConfig(steps=150, lr=2e-2, log_every=50), progress=False)
    after = eval_mse(sae, held_out)
    assert not sae.training
    assert after < 0.25 * before, (before, after)
    assert result.steps == 150 and result.samples == 150 * 64
    assert [h["step"] for h in result.history] == [50, 100, 150]
    assert result.history[-1]["mse"] < result.history[0]["mse"] * 1.5


@pytest.mark.parametrize("seed", [0, 6])
def test_topk_recovers_orthogonal_one_hot_features(seed):
    """Easy recovery: 8 orthogonal features, one active at a time, a TopK (k=1) SAE with 16 latents.

    Twice as many latents as features, because with exactly as many the problem is bimodal: from most
    starts two features share a latent and the other latent dies with all pre-activations negative,
    which the (ReLU'd, as in OpenAI's reference code) AuxK loss cannot revive (2 of 24 starts recover).
    The features are drawn from another seed than the SAE, so the start is not correlated with them."""
    dirs = orthogonal_features(8, 16, 1000 + seed)
    sae = make("topk", d_in=16, d_sae=16, k=1, seed=seed, dead_after=10)
    train_sae(sae, one_hot_stream(dirs, seed), TrainConfig(steps=300, lr=3e-2), progress=False)
    assert mcc(dirs, sae.W_dec.detach()) >= 0.99
    # each sample is encoded by one latent, the one of its own feature
    x = next(one_hot_stream(dirs, seed + 1000, n=128))
    with torch.no_grad():
        codes = sae.encode(x)
        rows = sae.W_dec[codes.argmax(-1)]
    assert bool(((codes > 0).sum(-1) == 1).all())
    assert float(torch.cosine_similarity(rows, x, dim=-1).min()) >= 0.99


# ------------------------------------------------------------------------------------------------
# checkpoints and resuming
# ------------------------------------------------------------------------------------------------

RESUME_CASES = {  # name -> (architecture, SAEConfig fields, TrainConfig fields)
    "standard_resampling": (
        "standard",
        {"decoder_norm": "unit", "resample_every": 3, "dead_after": 2, "sparsity_coefficient": 0.5},
        {},
    ),
    "standard_free_unclipped": ("standard", {"decoder_norm": "free"}, {"max_grad_norm": 0.0}),
    "batchtopk": ("batchtopk", {"k": 2, "dead_after": 3}, {}),
    "topk": ("topk", {"k": 2, "dead_after": 3}, {}),
    "jumprelu": ("jumprelu", {"jump_bandwidth": 0.1}, {"max_grad_norm": 0.05}),
    "jumprelu_unit": ("jumprelu", {"decoder_norm": "unit", "jump_init_threshold": 0.2}, {}),
    "gated": ("gated", {}, {}),
    "matryoshka_batchtopk": ("matryoshka_batchtopk", {"k": 2, "dead_after": 3}, {}),
    "p_anneal": ("p_anneal", {}, {}),
    "matching_pursuit": ("matching_pursuit", {"k": 2}, {}),
    "standard_target_l0": ("standard", {"target_l0": 2.0}, {}),  # the controller's coefficient resumes too
    # L0 starts below 2 and ends above it: the thresholds are scaled down, then left to the penalty
    "jumprelu_target_l0": ("jumprelu", {"target_l0": 2.0, "jump_bandwidth": 0.1}, {}),
    "p_anneal_target_l0": ("p_anneal", {"target_l0": 2.0}, {}),  # and the coefficient's learned trend
}


def resume_stream() -> Iterator[torch.Tensor]:
    """Three features in eight dimensions: many latents never fire, so resampling and AuxK engage."""
    return one_hot_stream(orthogonal_features(3, 8, seed=0), seed=7, n=32)


@pytest.mark.parametrize("case", list(RESUME_CASES))
@pytest.mark.parametrize("interrupt_at", [6, 8])
def test_interrupted_training_resumes_to_identical_weights(case, interrupt_at, tmp_path):
    arch, kw, train_kw = RESUME_CASES[case]
    cfg = SAEConfig(architecture=arch, d_in=8, d_sae=24, seed=4, **kw)
    train = TrainConfig(steps=12, lr=1e-2, warmup_steps=2, checkpoint_every=4, log_every=1, **train_kw)

    reference = make_sae(cfg)
    full = train_sae(reference, resume_stream(), train, checkpoint_dir=tmp_path / "full", progress=False)

    with pytest.raises(Interrupted):
        train_sae(
            make_sae(cfg),
            interrupt_after(resume_stream(), interrupt_at),
            train,
            checkpoint_dir=tmp_path / "run",
            progress=False,
        )
    meta = json.loads((tmp_path / "run" / "latest" / "trainer.json").read_text())
    assert meta["step"] == 4 * (interrupt_at // 4)  # the last checkpoint before the crash
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["latest"]  # no temporaries left

    resumed_sae = make_sae(cfg)  # a fresh process: new module, same config
    resumed = train_sae(resumed_sae, resume_stream(), train, checkpoint_dir=tmp_path / "run", progress=False)

    ours, theirs = resumed_sae.state_dict(), reference.state_dict()
    assert set(ours) == set(theirs)
    for name in theirs:
        assert torch.equal(ours[name], theirs[name]), name
    assert resumed.history == full.history
    assert resumed.samples == (12 - meta["step"]) * 32
    if case == "standard_resampling":  # resampling did happen, so it was replayed exactly
        plain = make_sae(cfg.replace(resample_every=0))
        train_sae(plain, resume_stream(), train, progress=False)
        assert not torch.equal(plain.W_dec, reference.W_dec)
    if arch in ("topk", "batchtopk", "matryoshka_batchtopk"):  # so did the AuxK loss
        assert "aux" in full.history[-1]
    # the final checkpoint matches too, and resuming a finished run changes nothing
    again = make_sae(cfg)
    train_sae(again, resume_stream(), train, checkpoint_dir=tmp_path / "run", progress=False)
    for name, value in again.state_dict().items():
        assert torch.equal(value, theirs[name]), name


def test_checkpoints_follow_wall_time_and_resume_exactly(tmp_path, monkeypatch):
    """With no step interval, a checkpoint is written whenever ``checkpoint_seconds`` have passed since
    the last one (a fake clock advancing 100 s per batch: steps 3, 6, 9, ...), and resuming from one is
    bit-identical to an uninterrupted run."""
    clock = {"now": 0.0}
    monkeypatch.setattr(training.time, "monotonic", lambda: clock["now"])

    def ticking(stream: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        for x in stream:
            clock["now"] += 100.0
            yield x

    cfg = SAEConfig("topk", 8, 24, k=2, dead_after=3, seed=4)
    train = TrainConfig(steps=12, lr=1e-2, checkpoint_every=0, checkpoint_seconds=250.0, log_every=1)
    reference = make_sae(cfg)
    train_sae(reference, resume_stream(), train, progress=False)
    with pytest.raises(Interrupted):
        train_sae(
            make_sae(cfg), interrupt_after(ticking(resume_stream()), 8), train, checkpoint_dir=tmp_path, progress=False
        )
    assert json.loads((tmp_path / "latest" / "trainer.json").read_text())["step"] == 6
    resumed = make_sae(cfg)
    train_sae(resumed, ticking(resume_stream()), train, checkpoint_dir=tmp_path, progress=False)
    for name, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    # the interval is not part of the recipe: another one resumes the same run
    assert TrainConfig(steps=12, checkpoint_seconds=1.0).identity() == TrainConfig(steps=12).identity()


def test_a_checkpoint_from_before_a_config_field_existed_resumes(tmp_path):
    """A checkpoint whose recorded config lacks a field added later (at its default) is the same config."""
    train = TrainConfig(steps=4, checkpoint_every=2)
    with pytest.raises(Interrupted):
        train_sae(
            make("standard", seed=0),
            interrupt_after(gaussian_stream(0), 3),
            train,
            checkpoint_dir=tmp_path,
            progress=False,
        )
    meta_path = tmp_path / "latest" / "trainer.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["target_l0"]
    meta_path.write_text(json.dumps(meta))
    resumed = train_sae(make("standard", seed=0), gaussian_stream(0), train, checkpoint_dir=tmp_path, progress=False)
    assert resumed.samples == 2 * next(gaussian_stream(0)).shape[0]  # two steps left after the step-2 checkpoint


def test_checkpoint_for_a_different_config_raises(tmp_path):
    train = TrainConfig(steps=2, checkpoint_every=1)
    train_sae(make("standard", seed=0), gaussian_stream(0), train, checkpoint_dir=tmp_path, progress=False)
    meta = json.loads((tmp_path / "latest" / "trainer.json").read_text())
    assert meta["train"]["max_grad_norm"] == 1.0  # the recipe is recorded with the weights
    for other in (make("standard", seed=1), make("standard", sparsity_coefficient=2.0), make("topk")):
        with pytest.raises(ValueError, match="different config"):
            train_sae(other, gaussian_stream(0), train, checkpoint_dir=tmp_path, progress=False)
    for changed in (TrainConfig(steps=2, max_grad_norm=0.5), TrainConfig(steps=2, lr=1e-3)):
        with pytest.raises(ValueError, match="different train config"):
            train_sae(make("standard", seed=0), gaussian_stream(0), changed, checkpoint_dir=tmp_path, progress=False)
    # how often to log or checkpoint does not change the weights, so it may change on resume
    train_sae(
        make("standard", seed=0),
        gaussian_stream(0),
        TrainConfig(steps=2, log_every=7),
        checkpoint_dir=tmp_path,
        progress=False,
    )


# ------------------------------------------------------------------------------------------------
# gradient clipping
# ------------------------------------------------------------------------------------------------


def test_clip_hand_worked():
    """Gradients (3, 0) and (0, 4) have global norm 5: clipped to 1 they become (0.6, 0) and (0, 0.8);
    a larger bound or 0 (off) leaves them alone."""
    for bound, scale in ((1.0, 0.2), (5.5, 1.0), (0.0, 1.0)):
        a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
        a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])
        TrainConfig(steps=1, max_grad_norm=bound).clip([a, b])
        torch.testing.assert_close(a.grad, torch.tensor([3.0, 0.0]) * scale)
        torch.testing.assert_close(b.grad, torch.tensor([0.0, 4.0]) * scale)


@pytest.mark.parametrize("arch", ["standard", "jumprelu", "topk"])
@pytest.mark.parametrize("bound", [0.01, 0.0])
def test_trainer_steps_with_clipped_gradients(arch, bound):
    """What the optimiser sees is the SAE's own gradient (after its unit-row projection) scaled
    down to norm ``bound``: the same direction, and unchanged when clipping is off."""
    sae = make(arch, sparsity_coefficient=0.1)
    x = next(gaussian_stream(3))
    reference = make(arch, sparsity_coefficient=0.1)
    terms = reference.training_loss(x, 0.5)
    terms.total.backward()
    reference.before_optimizer_step()
    raw = [p.grad.clone() for p in reference.parameters() if p.grad is not None]
    raw_norm = float(torch.sqrt(sum((g**2).sum() for g in raw)))
    assert raw_norm > 1.0  # so the bound clips, and clip_grad_norm_'s 1e-6 guard is below the tolerance

    trainer = Trainer(sae, TrainConfig(steps=2, max_grad_norm=bound))
    seen = []
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda: (
        seen.append([p.grad.clone() for p in sae.parameters() if p.grad is not None]),
        step(),
    )
    trainer.step(x, 1)
    scale = bound / raw_norm if bound else 1.0
    assert len(seen[0]) == len(raw)
    for got, want in zip(seen[0], raw, strict=True):
        torch.testing.assert_close(got, want * scale, rtol=1e-5, atol=1e-8)


def test_optimizer_uses_the_schedule(tmp_path):
    train = TrainConfig(steps=10, lr=0.1, warmup_steps=3, decay_fraction=0.5)
    train_sae(make("standard"), gaussian_stream(0), train, checkpoint_dir=tmp_path, progress=False)
    state = torch.load(tmp_path / "latest" / "optimizer.pt", weights_only=True)
    assert state["param_groups"][0]["lr"] == pytest.approx(train.lr_at(9))
    assert state["param_groups"][0]["lr"] == pytest.approx(0.1 * 1 / 5)


# ------------------------------------------------------------------------------------------------
# TrainConfig
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"decay_fraction": -0.1}, "decay_fraction"),
        ({"decay_fraction": 1.5}, "decay_fraction"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
        ({"checkpoint_seconds": -1.0}, "checkpoint_seconds"),
        ({"log_every": 0}, "log_every"),
        ({"max_grad_norm": -1.0}, "max_grad_norm"),
        ({"max_grad_norm": float("nan")}, "max_grad_norm"),
    ],
)
def test_bad_train_config_raises_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        TrainConfig(**{"steps": 100, **changes})


def test_lr_schedule_closed_form():
    # warm-up over 10 steps to lr, constant, then linear decay to 0 over the last 20% (steps 80..100)
    train = TrainConfig(steps=100, lr=2.0, warmup_steps=10, decay_fraction=0.2)
    expected = {0: 0.2, 4: 1.0, 9: 2.0, 10: 2.0, 50: 2.0, 79: 2.0, 80: 2.0, 85: 1.5, 90: 1.0, 99: 0.1, 100: 0.0}
    for step, lr in expected.items():
        assert train.lr_at(step) == pytest.approx(lr, abs=1e-12), step
    # no warm-up and no decay: constant
    flat = TrainConfig(steps=10, lr=0.3, decay_fraction=0.0)
    assert all(flat.lr_at(s) == 0.3 for s in range(10))
    # decay over the whole run, overlapping the warm-up: the two factors multiply
    both = TrainConfig(steps=10, lr=1.0, warmup_steps=4, decay_fraction=1.0)
    for s in range(10):
        assert both.lr_at(s) == pytest.approx(min(1.0, (s + 1) / 4) * (10 - s) / 10), s


def test_train_accepts_activation_batches():
    class Batch:
        def __init__(self, x):
            self.x = x

    sae = make("standard")
    batches = (Batch(x) for x in gaussian_stream(3))
    result = train_sae(sae, batches, TrainConfig(steps=3, log_every=1), progress=False)
    assert result.samples == 3 * 32 and len(result.history) == 3


# ------------------------------------------------------------------------------------------------
# several SAEs on one stream
# ------------------------------------------------------------------------------------------------


def _equal_weights(a: SparseAutoencoder, b: SparseAutoencoder) -> bool:
    return all(torch.equal(b.state_dict()[name], value) for name, value in a.state_dict().items())


@given(seed=st.integers(0, 2**16), cases=st.lists(st.sampled_from(sorted(RESUME_CASES)), min_size=2, max_size=3))
@settings(max_examples=6, deadline=None)
def test_saes_trained_together_equal_each_trained_alone(seed, cases):
    """One shared stream drawn once gives every SAE the bytes it would have had alone."""
    train = TrainConfig(steps=8, lr=1e-2, warmup_steps=2, log_every=1)
    configs = [SAEConfig(RESUME_CASES[c][0], 8, 24, seed=seed + i, **RESUME_CASES[c][1]) for i, c in enumerate(cases)]
    alone = [make_sae(cfg) for cfg in configs]
    for sae in alone:
        train_sae(sae, resume_stream(), train, progress=False)
    drawn = []

    def counted(stream):
        for x in stream:
            drawn.append(x)
            yield x

    together = [make_sae(cfg) for cfg in configs]
    results = train_saes(together, counted(resume_stream()), train, progress=False)
    assert len(drawn) == train.steps  # each batch drawn once for all of them
    assert all(r.samples == 32 * train.steps for r in results)
    for a, b in zip(alone, together, strict=True):
        assert _equal_weights(a, b)


def test_saes_resume_together_from_checkpoints_at_different_steps(tmp_path):
    """A group killed between two SAEs' checkpoints resumes each from its own step, to the same weights."""
    train = TrainConfig(steps=12, lr=1e-2, checkpoint_every=4, log_every=1)
    configs = [SAEConfig("topk", 8, 24, k=2, seed=1), SAEConfig("standard", 8, 24, seed=2)]
    reference = [make_sae(cfg) for cfg in configs]
    train_saes(reference, resume_stream(), train, progress=False)
    dirs = [tmp_path / "a", tmp_path / "b"]
    first = make_sae(configs[0])
    with pytest.raises(Interrupted):  # only the first SAE got as far as step 8
        train_sae(first, interrupt_after(resume_stream(), 9), train, checkpoint_dir=dirs[0], progress=False)
    resumed = [make_sae(cfg) for cfg in configs]
    train_saes(resumed, resume_stream(), train, checkpoint_dirs=dirs, progress=False)
    for a, b in zip(reference, resumed, strict=True):
        assert _equal_weights(a, b)


def test_isolate_keeps_the_others_training_when_one_sae_raises(monkeypatch):
    train = TrainConfig(steps=6, lr=1e-2, log_every=1)
    configs = [SAEConfig("topk", 8, 24, k=2, seed=1), SAEConfig("standard", 8, 24, seed=2)]
    reference = make_sae(configs[1])
    train_sae(reference, resume_stream(), train, progress=False)
    broken, healthy = (make_sae(cfg) for cfg in configs)
    original = broken.training_loss

    def fails_at_step_3(x, progress):
        if progress >= 3 / train.steps:
            raise RuntimeError("loss exploded")
        return original(x, progress)

    monkeypatch.setattr(broken, "training_loss", fails_at_step_3)
    with pytest.raises(RuntimeError, match="loss exploded"):
        train_saes([broken, make_sae(configs[1])], resume_stream(), train, progress=False)
    broken = make_sae(configs[0])
    monkeypatch.setattr(broken, "training_loss", fails_at_step_3)
    failed, finished = train_saes([broken, healthy], resume_stream(), train, progress=False, isolate=True)
    assert isinstance(failed, RuntimeError) and "loss exploded" in str(failed)
    assert finished.steps == train.steps and _equal_weights(reference, healthy)


def test_train_saes_checks_its_checkpoint_list():
    with pytest.raises(ValueError, match="checkpoint_dirs has 1 entries for 2 SAEs"):
        train_saes([make("topk"), make("topk")], resume_stream(), TrainConfig(steps=2), checkpoint_dirs=[None])
