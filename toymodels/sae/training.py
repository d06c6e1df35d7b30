"""SAE training: the step every architecture follows, on the shared loop of :mod:`toymodels.training`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from toymodels.sae.base import LossTerms, SparseAutoencoder
from toymodels.training import TrainConfig, TrainResult, fit, gradient_step


class Trainer:
    """One Adam optimiser and the training-step protocol every SAE follows: loss, backward, the
    SAE's pre-step hook (e.g. project out gradients along unit decoder rows), gradient clipping,
    the optimiser step, the post-step hook (renormalise, resample, track firing)."""

    def __init__(self, sae: SparseAutoencoder, train: TrainConfig):
        self.sae, self.train = sae, train
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=train.lr, betas=train.betas)

    def step(self, x: torch.Tensor, step: int) -> LossTerms:
        """Train on batch ``x`` as step ``step`` (0-based) of ``train.steps``; returns the loss terms."""
        terms = self.sae.training_loss(x, step / self.train.steps)
        gradient_step(self.optimizer, terms.total, self.train, step, self.sae.before_optimizer_step)
        self.sae.after_optimizer_step(x, terms.codes, self.optimizer, step + 1)
        return terms


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
    sae.to(device)
    trainer = Trainer(sae, train)

    def step_fn(x, step: int) -> tuple[int, Callable[[], dict]]:
        x = x.x if hasattr(x, "x") else x
        terms = trainer.step(x.to(device), step)
        return x.shape[0], lambda: {
            "loss": float(terms.total.detach()),
            "mse": float(terms.mse.detach()),
            "l0": float((terms.codes > 0).sum(-1).float().mean()),
            **terms.parts,
        }

    return fit(sae, trainer.optimizer, step_fn, batches, train, checkpoint_dir, progress, f"{sae.architecture} SAE")


__all__ = ["Trainer", "train_sae"]
