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
    """The loop every trainer shares: resume from a checkpoint, fast-forward the stream past the
    batches already consumed, call ``step_fn(batch, step) -> (samples, record)`` for each step, log
    ``record()`` every ``train.log_every`` steps, and checkpoint atomically (every ``checkpoint_every``
    steps, every ``checkpoint_seconds`` of wall time, and at the end). ``module.cfg.to_dict()``
    and ``train.identity()`` identify the run, so a checkpoint from another configuration is refused."""
    module.train()
    start_step, history = 0, []
    ckpt = Path(checkpoint_dir) / "latest" if checkpoint_dir is not None else None
    if ckpt is not None:
        recover_dir(ckpt)
    if ckpt is not None and ckpt.exists():
        start_step, history = load_checkpoint(ckpt, module, optimizer, train, next(module.parameters()).device)
        logger.info("resuming from %s at step %d", ckpt, start_step)
    stream = iter(batches)

    def draw(step: int):
        try:
            return next(stream)
        except StopIteration:
            raise ValueError(f"batches ran out after {step} of train.steps={train.steps} steps") from None

    for step in range(start_step):  # fast-forward a deterministic stream past consumed batches
        draw(step)
    if train.snapshot_every:
        if checkpoint_dir is None:
            raise ValueError("train.snapshot_every needs a checkpoint_dir to keep the snapshots in")
        if start_step == 0:
            save_snapshot(Path(checkpoint_dir), module, 0)
    started, samples = time.perf_counter(), 0
    last_checkpoint = time.monotonic()
    bar = tqdm(total=train.steps, initial=start_step, desc=desc, disable=not progress)
    for step in range(start_step, train.steps):
        n, record = step_fn(draw(step), step)
        samples += n
        if (step + 1) % train.log_every == 0 or step + 1 == train.steps:
            entry = {"step": step + 1, **record()}
            history.append(entry)
            bar.set_postfix({k: f"{v:.4g}" for k, v in entry.items() if k in ("loss", "l0")})
            logger.info("step %d: %s", step + 1, entry)
        bar.update(1)
        if ckpt is not None and (
            (train.checkpoint_every and (step + 1) % train.checkpoint_every == 0)
            or (train.checkpoint_seconds and time.monotonic() - last_checkpoint >= train.checkpoint_seconds)
            or step + 1 == train.steps
        ):
            save_checkpoint(ckpt, module, optimizer, train, step + 1, history)
            last_checkpoint = time.monotonic()
        if train.snapshot_every and ((step + 1) % train.snapshot_every == 0 or step + 1 == train.steps):
            save_snapshot(Path(checkpoint_dir), module, step + 1)
    bar.close()
    module.eval()
    return TrainResult(train.steps, time.perf_counter() - started, samples, history)


def save_checkpoint(
    path: Path, sae: torch.nn.Module, optimizer, train: TrainConfig, step: int, history: list[dict]
) -> None:
    """Write module state, optimiser state and progress into a fresh folder, then swap it in."""
    with atomic_dir(path) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
        save_file(state, tmp / "module.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        meta = {"step": step, "config": sae.cfg.to_dict(), "train": train.identity(), "history": history}
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


def load_checkpoint(path: Path, sae: torch.nn.Module, optimizer, train: TrainConfig, device) -> tuple[int, list[dict]]:
    meta = json.loads((path / "trainer.json").read_text())
    # Compared as configs, so a checkpoint written before a field was added (at its default) still resumes.
    if type(sae.cfg).from_dict(meta["config"]) != sae.cfg:
        raise ValueError(f"checkpoint at {str(path)!r} was written for a different config: {meta['config']}")
    if meta.get("train") != train.identity():
        raise ValueError(
            f"checkpoint at {str(path)!r} was written for a different train config: "
            f"{meta.get('train', 'none recorded (written before gradient clipping)')}"
        )
    sae.load_state_dict({k: v.to(device) for k, v in load_file(path / "module.safetensors").items()})
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    return int(meta["step"]), list(meta["history"])


__all__ = ["TrainConfig", "TrainResult", "fit", "gradient_step", "snapshots"]
