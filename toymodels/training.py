"""The training loop every model shares (SAEs, the transformer): schedule, clipping, checkpoints.

Checkpoints hold the full module state (parameters and buffers such as firing counters and
thresholds), the optimiser and the step, written atomically every ``checkpoint_every`` steps, every
``checkpoint_seconds`` of wall time and at the end. Resuming restores them and skips the batches
already consumed, so a deterministic data stream resumes to the same weights as an uninterrupted run.
Nothing here knows what is being trained: SAE training is :mod:`toymodels.sae.training`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from groundtruth.atomic import atomic_dir, recover_dir
from groundtruth.checks import check_int, check_real
from groundtruth.config import Config

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig(Config):
    """Optimiser and schedule. The learning rate warms up linearly over ``warmup_steps`` and decays
    linearly to zero over the last ``decay_fraction`` of training. Before each step the global
    gradient norm is clipped to ``max_grad_norm`` (0 turns clipping off): without it the first
    steps' large gradients kill latents and undo the sparsity penalty's warm-up (SAELens clips at 1.0)."""

    steps: int
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    decay_fraction: float = 0.2
    max_grad_norm: float = 1.0
    checkpoint_every: int = 0
    checkpoint_seconds: float = 300.0  # also checkpoint after this much wall time since the last one (0: off)
    snapshot_every: int = 0  # also keep the weights every this many steps (and at step 0), for emergence plots
    log_every: int = 100

    def __post_init__(self) -> None:
        check_int("steps", self.steps)
        check_real("lr", self.lr, 0.0, low_open=True)
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        check_real("decay_fraction", self.decay_fraction, 0.0, 1.0)
        check_real("max_grad_norm", self.max_grad_norm, 0.0)
        check_int("checkpoint_every", self.checkpoint_every, minimum=0)
        check_real("checkpoint_seconds", self.checkpoint_seconds, 0.0)
        check_int("snapshot_every", self.snapshot_every, minimum=0)
        check_int("log_every", self.log_every)

    def identity(self) -> dict:
        """The fields that decide the trained weights (not how often to log, checkpoint or snapshot)."""
        out = asdict(self)
        for name in ("checkpoint_every", "checkpoint_seconds", "snapshot_every", "log_every"):
            del out[name]
        out["betas"] = list(self.betas)
        return out

    def clip(self, parameters) -> None:
        """Scale the gradients of ``parameters`` so their global norm is at most ``max_grad_norm``."""
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)

    def lr_at(self, step: int) -> float:
        scale = 1.0
        if self.warmup_steps and step < self.warmup_steps:
            scale = (step + 1) / self.warmup_steps
        decay_start = self.steps * (1 - self.decay_fraction)
        if self.decay_fraction > 0 and step >= decay_start:
            scale *= max(0.0, (self.steps - step) / (self.steps - decay_start))
        return self.lr * scale


@dataclass
class TrainResult:
    steps: int
    seconds: float
    samples: int
    history: list[dict] = field(default_factory=list)


def gradient_step(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    train: TrainConfig,
    step: int,
    before_step: Callable[[], None] | None = None,
) -> None:
    """One optimiser step as every model here takes it: the scheduled learning rate for ``step``, backward,
    the caller's hook (e.g. an SAE projecting gradients), gradient clipping, the step."""
    for group in optimizer.param_groups:
        group["lr"] = train.lr_at(step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if before_step is not None:
        before_step()
    train.clip([p for group in optimizer.param_groups for p in group["params"]])
    optimizer.step()


@dataclass
class Learner:
    """One model in a training loop: its optimiser, its step ``step(batch, step) -> (samples, record)``,
    the folder its checkpoints go to (None: no checkpoints) and what else identifies its run beyond the
    module's and the train config (an end-to-end objective), recorded in its checkpoints and checked on resume."""

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable[[object, int], tuple[int, Callable[[], dict]]]
    checkpoint_dir: str | Path | None = None
    identity: dict | None = None


def fit(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step_fn: Callable[[object, int], tuple[int, Callable[[], dict]]],
    batches: Iterable,
    train: TrainConfig,
    checkpoint_dir: str | Path | None,
    progress: bool,
    desc: str,
) -> TrainResult:
    """Train one model: :func:`fit_together` with a single :class:`Learner`."""
    (result,) = fit_together([Learner(module, optimizer, step_fn, checkpoint_dir)], batches, train, progress, desc)
    return result  # without isolate an error propagates, so this is a TrainResult


def fit_together(
    learners: list[Learner],
    batches: Iterable,
    train: TrainConfig,
    progress: bool,
    desc: str,
    *,
    isolate: bool = False,
) -> list[TrainResult | BaseException]:
    """The loop every trainer shares, over one or several models fed the same batches (each batch is drawn
    once: several SAEs on one stream pay for the data once, as SAELens's multi-SAE runner does).

    Each learner resumes from its checkpoint; the stream is fast-forwarded past the batches the least
    advanced one consumed, and a learner joins at the step it stopped at. ``learner.step(batch, step)``
    runs for each step, ``record()`` is logged every ``train.log_every`` steps, and checkpoints are written
    atomically (every ``checkpoint_every`` steps, every ``checkpoint_seconds`` of wall time, and at the end).
    ``module.cfg.to_dict()`` and ``train.identity()`` identify a run, so a checkpoint from another
    configuration is refused. With ``isolate``, a learner whose step raises is dropped and its exception
    takes its place in the results, so the others finish; otherwise the exception propagates.
    """
    states = []
    for learner in learners:
        try:
            states.append(_LearnerState.open(learner, train))
        except Exception as err:  # e.g. a checkpoint written for another config
            if not isolate:
                raise
            states.append(_LearnerState(learner, train.steps, [], error=err))
    start_step = min((s.step for s in states if s.error is None), default=train.steps)
    stream = iter(batches)

    def draw(step: int):
        try:
            return next(stream)
        except StopIteration:
            raise ValueError(f"batches ran out after {step} of train.steps={train.steps} steps") from None

    for step in range(start_step):  # fast-forward a deterministic stream past consumed batches
        draw(step)
    started, last_checkpoint = time.perf_counter(), time.monotonic()
    bar = tqdm(total=train.steps, initial=start_step, desc=desc, disable=not progress)
    for step in range(start_step, train.steps):
        batch = draw(step)
        due = bool(train.checkpoint_seconds) and time.monotonic() - last_checkpoint >= train.checkpoint_seconds
        for state in states:
            if state.error is None and state.step <= step:
                try:
                    state.advance(batch, step, train, bar, checkpoint_due=due)
                except Exception as err:
                    if not isolate:
                        raise
                    logger.warning("%s failed at step %d: %s", desc, step, err)
                    state.error = err
        if due:
            last_checkpoint = time.monotonic()
        bar.update(1)
    bar.close()
    for state in states:
        state.learner.module.eval()
    seconds = time.perf_counter() - started
    return [s.error if s.error is not None else TrainResult(train.steps, seconds, s.samples, s.history) for s in states]


@dataclass
class _LearnerState:
    """Where one learner of :func:`fit_together` stands: its step, history and samples so far."""

    learner: Learner
    step: int
    history: list[dict]
    samples: int = 0
    error: BaseException | None = None

    @classmethod
    def open(cls, learner: Learner, train: TrainConfig) -> _LearnerState:
        learner.module.train()
        step, history = 0, []
        folder = Path(learner.checkpoint_dir) if learner.checkpoint_dir is not None else None
        if folder is not None:
            recover_dir(folder / "latest")
            if (folder / "latest").exists():
                device = next(learner.module.parameters()).device
                step, history = load_checkpoint(folder / "latest", learner, train, device)
                logger.info("resuming from %s at step %d", folder / "latest", step)
        if train.snapshot_every:
            if folder is None:
                raise ValueError("train.snapshot_every needs a checkpoint_dir to keep the snapshots in")
            if step == 0:
                save_snapshot(folder, learner.module, 0)
        return cls(learner, step, history)

    def advance(self, batch, step: int, train: TrainConfig, bar, *, checkpoint_due: bool) -> None:
        n, record = self.learner.step(batch, step)
        self.samples += n
        self.step = step + 1
        if self.step % train.log_every == 0 or self.step == train.steps:
            entry = {"step": self.step, **record()}
            self.history.append(entry)
            bar.set_postfix({k: f"{v:.4g}" for k, v in entry.items() if k in ("loss", "l0")})
            logger.info("step %d: %s", self.step, entry)
        folder = Path(self.learner.checkpoint_dir) if self.learner.checkpoint_dir is not None else None
        if folder is not None and (
            (train.checkpoint_every and self.step % train.checkpoint_every == 0)
            or checkpoint_due
            or self.step == train.steps
        ):
            save_checkpoint(folder / "latest", self.learner, train, self.step, self.history)
        if train.snapshot_every and (self.step % train.snapshot_every == 0 or self.step == train.steps):
            save_snapshot(folder, self.learner.module, self.step)


def save_checkpoint(path: Path, learner: Learner, train: TrainConfig, step: int, history: list[dict]) -> None:
    """Write module state, optimiser state and progress into a fresh folder, then swap it in."""
    with atomic_dir(path) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in learner.module.state_dict().items()}
        save_file(state, tmp / "module.safetensors")
        torch.save(learner.optimizer.state_dict(), tmp / "optimizer.pt")
        meta = {"step": step, "config": learner.module.cfg.to_dict(), "train": train.identity(), "history": history}
        if learner.identity is not None:
            meta["identity"] = learner.identity
        (tmp / "trainer.json").write_text(json.dumps(meta))


def save_snapshot(checkpoint_dir: Path, module: torch.nn.Module, step: int) -> None:
    """Keep the weights at ``step`` in ``checkpoint_dir/snapshots/step-NNNNNNN/`` (atomically)."""
    with atomic_dir(checkpoint_dir / "snapshots" / f"step-{step:07d}") as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, tmp / "module.safetensors"
        )


def snapshots(checkpoint_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, weights file)`` for every snapshot :func:`fit` kept, in training order; load one with
    ``module.load_state_dict(safetensors.torch.load_file(path))``."""
    found = sorted(Path(checkpoint_dir).glob("snapshots/step-*/module.safetensors"))
    return [(int(p.parent.name.removeprefix("step-")), p) for p in found]


def load_checkpoint(path: Path, learner: Learner, train: TrainConfig, device) -> tuple[int, list[dict]]:
    sae, optimizer = learner.module, learner.optimizer
    meta = json.loads((path / "trainer.json").read_text())
    # Compared as configs, so a checkpoint written before a field was added (at its default) still resumes.
    if type(sae.cfg).from_dict(meta["config"]) != sae.cfg:
        raise ValueError(f"checkpoint at {str(path)!r} was written for a different config: {meta['config']}")
    if meta.get("train") != train.identity():
        raise ValueError(
            f"checkpoint at {str(path)!r} was written for a different train config: "
            f"{meta.get('train', 'none recorded (written before gradient clipping)')}"
        )
    if meta.get("identity") != learner.identity:
        raise ValueError(
            f"checkpoint at {str(path)!r} was written for a different run: {meta.get('identity')}, "
            f"not {learner.identity}"
        )
    sae.load_state_dict({k: v.to(device) for k, v in load_file(path / "module.safetensors").items()})
    # Read onto the CPU: load_state_dict moves the moments to their parameters' device and keeps Adam's step
    # counters on the CPU, where a fresh optimiser has them, whatever device wrote the checkpoint.
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    return int(meta["step"]), list(meta["history"])


__all__ = ["Learner", "TrainConfig", "TrainResult", "fit", "fit_together", "gradient_step", "snapshots"]
