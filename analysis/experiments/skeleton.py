"""The steps every model experiment shares: train the model or load it from its run folder, and train
SAEs on activations cached from it (the model's forward pass is the expensive part, so SAEs sample rows
of one cached tensor instead of running the model again)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from toymodels.sae import SAEConfig, SparseAutoencoder, make_sae, train_sae
from toymodels.training import TrainConfig
from toymodels.transformer import (
    HookedTransformer,
    TransformerConfig,
    load_transformer,
    save_transformer,
    train_transformer,
)

logger = logging.getLogger(__name__)


def trained_model(
    out: Path,
    cfg: TransformerConfig,
    batches: Callable[[], Iterable],
    train: TrainConfig,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[HookedTransformer, float | None]:
    """The model saved in ``out/model``, or one trained on ``batches()`` (resuming from ``out/checkpoints``)
    and saved there; with the minutes training took (None when it was loaded). It trains and is returned
    on ``device``; what is saved does not depend on it, so a model trained on one device is reused on another."""
    if (out / "model").exists():
        logger.info("loaded the trained model from %s", out / "model")
        return load_transformer(out / "model", device), None
    started = time.perf_counter()
    model = HookedTransformer(cfg).to(device)  # initialised on the CPU: the same weights on any device
    train_transformer(model, batches(), train, checkpoint_dir=out / "checkpoints", progress=progress)
    minutes = (time.perf_counter() - started) / 60
    save_transformer(model, out / "model")
    return model, minutes


def cached_batches(acts: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """An endless stream of ``batch_size`` rows of ``acts`` drawn uniformly with replacement."""
    g = torch.Generator().manual_seed(seed)
    while True:
        yield acts[torch.randint(len(acts), (batch_size,), generator=g)]


def sae_on_cached(
    acts: torch.Tensor,
    cfg: SAEConfig,
    train: TrainConfig,
    seed: int,
    *,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> SparseAutoencoder:
    """A fresh SAE of ``cfg`` trained on ``device`` on batches of 1,024 cached activations ``[n, d]`` (stream
    seed ``seed``). The activations move to ``device`` once; the rows drawn do not depend on it."""
    sae = make_sae(cfg)
    batches = cached_batches(acts.to(device), 1024, seed)
    train_sae(sae, batches, train, checkpoint_dir=checkpoint_dir, progress=progress, device=device)
    return sae


__all__ = ["cached_batches", "sae_on_cached", "trained_model"]
