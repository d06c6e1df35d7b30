"""One training loop for every SAE variant: any iterator of activation batches in, a trained SAE out.

Checkpoints hold the full module state (parameters and buffers such as firing counters and
thresholds), the optimiser and the step, written atomically. Resuming restores them and skips the
batches already consumed, so a deterministic data stream resumes to the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from groundtruth._checks import check_int, check_real
from toymodels.sae.base import LossTerms, SparseAutoencoder
from toymodels.sae.io import recover_dir, replace_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule. The learning rate warms up linearly over ``warmup_steps`` and decays
    linearly to zero over the last ``decay_fraction`` of training."""

    steps: int
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    decay_fraction: float = 0.2
    checkpoint_every: int = 0
    log_every: int = 100

    def __post_init__(self) -> None:
        check_int("steps", self.steps)
        check_real("lr", self.lr, 0.0, low_open=True)
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        check_real("decay_fraction", self.decay_fraction, 0.0, 1.0)
        check_int("checkpoint_every", self.checkpoint_every, minimum=0)
        check_int("log_every", self.log_every)

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


class Trainer:
    """One Adam optimiser and the training-step protocol every SAE follows: loss, backward, the
    SAE's pre-step hook (e.g. project out gradients along unit decoder rows), the optimiser step,
    the post-step hook (renormalise, resample, track firing)."""

    def __init__(self, sae: SparseAutoencoder, train: TrainConfig):
        self.sae, self.train = sae, train
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=train.lr, betas=train.betas)

    def step(self, x: torch.Tensor, step: int) -> LossTerms:
        """Train on batch ``x`` as step ``step`` (0-based) of ``train.steps``; returns the loss terms."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.train.lr_at(step)
        terms = self.sae.training_loss(x, step / self.train.steps)
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        self.sae.before_optimizer_step()
        self.optimizer.step()
        self.sae.after_optimizer_step(x, terms.codes, self.optimizer, step + 1)
        return terms


def _tensors(batches: Iterable) -> Iterator[torch.Tensor]:
    for batch in batches:
        yield batch.x if hasattr(batch, "x") else batch


def train_sae(
    sae: SparseAutoencoder,
    batches: Iterable,
    train: TrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> TrainResult:
    """Train ``sae`` in place on ``train.steps`` batches drawn from ``batches``.

    ``batches`` yields ``[n, d_in]`` tensors (or objects with an ``x`` attribute, such as
    :class:`groundtruth.ActivationBatch`). With ``checkpoint_dir`` set, a checkpoint is written every
    ``train.checkpoint_every`` steps and at the end, and an existing checkpoint is resumed from.
    """
    device = torch.device(device) if device is not None else sae.device
    sae.to(device).train()
    trainer = Trainer(sae, train)
    optimizer = trainer.optimizer
    start_step, history = 0, []
    ckpt = Path(checkpoint_dir) / "latest" if checkpoint_dir is not None else None
    if ckpt is not None:
        recover_dir(ckpt)
    if ckpt is not None and ckpt.exists():
        start_step, history = load_checkpoint(ckpt, sae, optimizer, device)
        logger.info("resuming from %s at step %d", ckpt, start_step)
    stream = _tensors(batches)

    def draw(step: int) -> torch.Tensor:
        try:
            return next(stream)
        except StopIteration:
            raise ValueError(f"batches ran out after {step} of train.steps={train.steps} steps") from None

    for step in range(start_step):  # fast-forward a deterministic stream past consumed batches
        draw(step)
    started, samples = time.perf_counter(), 0
    bar = tqdm(total=train.steps, initial=start_step, desc=f"{sae.architecture} SAE", disable=not progress)
    for step in range(start_step, train.steps):
        x = draw(step).to(device)
        terms = trainer.step(x, step)
        samples += x.shape[0]
        if (step + 1) % train.log_every == 0 or step + 1 == train.steps:
            record = {
                "step": step + 1,
                "loss": float(terms.total.detach()),
                "mse": float(terms.mse.detach()),
                "l0": float((terms.codes > 0).sum(-1).float().mean()),
                **terms.parts,
            }
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4g}", l0=f"{record['l0']:.1f}")
            logger.info("step %d: %s", step + 1, record)
        bar.update(1)
        if ckpt is not None and (
            (train.checkpoint_every and (step + 1) % train.checkpoint_every == 0) or step + 1 == train.steps
        ):
            save_checkpoint(ckpt, sae, optimizer, step + 1, history)
    bar.close()
    sae.eval()
    return TrainResult(train.steps, time.perf_counter() - started, samples, history)


def save_checkpoint(path: Path, sae: SparseAutoencoder, optimizer, step: int, history: list[dict]) -> None:
    """Write module state, optimiser state and progress into a fresh folder, then swap it in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
        save_file(state, tmp / "module.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        meta = {"step": step, "config": sae.cfg.to_dict(), "history": history}
        (tmp / "trainer.json").write_text(json.dumps(meta))
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_checkpoint(path: Path, sae: SparseAutoencoder, optimizer, device) -> tuple[int, list[dict]]:
    meta = json.loads((path / "trainer.json").read_text())
    if meta["config"] != sae.cfg.to_dict():
        raise ValueError(f"checkpoint at {str(path)!r} was written for a different SAE config: {meta['config']}")
    sae.load_state_dict({k: v.to(device) for k, v in load_file(path / "module.safetensors").items()})
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    return int(meta["step"]), list(meta["history"])


__all__ = ["TrainConfig", "TrainResult", "Trainer", "train_sae"]
