"""SAE training: the step every architecture follows, on the shared loop of :mod:`toymodels.training`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from toymodels.sae.base import LossTerms, SparseAutoencoder
from toymodels.training import Learner, TrainConfig, TrainResult, fit_together, gradient_step

if TYPE_CHECKING:
    from toymodels.e2e import Objective


class Trainer:
    """One Adam optimiser and the training-step protocol every SAE follows: loss, backward, the
    SAE's pre-step hook (e.g. project out gradients along unit decoder rows), gradient clipping,
    the optimiser step, the post-step hook (renormalise, resample, track firing)."""

    def __init__(self, sae: SparseAutoencoder, train: TrainConfig):
        self.sae, self.train = sae, train
        self.optimizer = torch.optim.Adam(sae.parameters(), lr=train.lr, betas=train.betas)

    def step(self, x: torch.Tensor, step: int, loss: Callable[[LossTerms], LossTerms] | None = None) -> LossTerms:
        """Train on batch ``x`` as step ``step`` (0-based) of ``train.steps``; returns the loss terms.
        ``loss`` maps the SAE's own loss terms to the ones minimised (an end-to-end objective's)."""
        self.sae.training_progress = step / self.train.steps  # the L0 controller's annealed goal reads it
        terms = self.sae.training_loss(x, step / self.train.steps)
        if loss is not None:
            terms = loss(terms)
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
    objective: Objective | None = None,
) -> TrainResult:
    """Train ``sae`` in place on ``train.steps`` batches drawn from ``batches``.

    ``batches`` yields ``[n, d_in]`` tensors (or objects with an ``x`` attribute, such as
    :class:`groundtruth.ActivationBatch`). With ``checkpoint_dir`` set, a checkpoint is written every
    ``train.checkpoint_every`` steps and at the end, and an existing checkpoint is resumed from.
    With ``objective`` (a :class:`toymodels.e2e.Objective`), batches are what its model takes (tokens for a
    transformer) and the SAE trains on that objective at the objective's hook.
    """
    (result,) = train_saes(
        [sae], batches, train, checkpoint_dirs=[checkpoint_dir], progress=progress, device=device, objective=objective
    )
    return result  # without isolate an error propagates, so this is a TrainResult


def train_saes(
    saes: list[SparseAutoencoder],
    batches: Iterable,
    train: TrainConfig,
    *,
    checkpoint_dirs: list[str | Path | None] | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    isolate: bool = False,
    objective: Objective | None = None,
) -> list[TrainResult | BaseException]:
    """Train several SAEs in place on one stream: each batch is drawn (and moved to the device) once and
    every SAE takes its step on it, as if each had been trained alone on the same batches.

    ``checkpoint_dirs`` gives each SAE its own checkpoint folder (or None). With ``isolate``, an SAE whose
    training raises is dropped, its exception takes its place in the results, and the others go on. With
    ``objective`` (:func:`train_sae`), the clean run of each batch through the model is shared by every SAE,
    and the model moves to ``device`` (when given) with them.
    """
    if checkpoint_dirs is None:
        checkpoint_dirs = [None] * len(saes)
    if len(checkpoint_dirs) != len(saes):
        raise ValueError(f"checkpoint_dirs has {len(checkpoint_dirs)} entries for {len(saes)} SAEs")
    last: list = [None, None]  # the batch most recently moved to the device, by identity

    def on_device(batch, target: torch.device) -> torch.Tensor:
        if last[0] is not batch or last[1].device != target:
            x = batch.x if hasattr(batch, "x") else batch
            last[:] = [batch, x.to(target)]
        return last[1]

    def clean_run(batch):
        if last[0] is not batch:
            last[:] = [batch, objective.clean(batch)]
        return last[1]

    if objective is not None and device is not None:
        objective.model.to(device)  # the spliced model runs where its SAEs train
    identity = None if objective is None else objective.identity()  # hashes the model's weights: once
    learners = []
    for sae, folder in zip(saes, checkpoint_dirs, strict=True):
        target = torch.device(device) if device is not None else (objective or sae).device
        sae.to(target)
        trainer = Trainer(sae, train)

        def step_fn(batch, step: int, trainer=trainer, target=target) -> tuple[int, Callable[[], dict]]:
            if objective is None:
                x = on_device(batch, target)
                samples, terms = x.shape[0], trainer.step(x, step)
            else:
                samples, terms = objective.step(trainer, clean_run(batch), step)
            return samples, lambda: {
                "loss": float(terms.total.detach()),
                "mse": float(terms.mse.detach()),
                "l0": float((terms.codes > 0).sum(-1).float().mean()),
                **terms.parts,
            }

        learners.append(Learner(sae, trainer.optimizer, step_fn, folder, identity))
    desc = f"{saes[0].architecture} SAE" if len(saes) == 1 else f"{len(saes)} SAEs"
    return fit_together(learners, batches, train, progress, desc, isolate=isolate)


__all__ = ["Trainer", "train_sae", "train_saes"]
