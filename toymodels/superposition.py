"""The toy model of superposition (Elhage et al. 2022, "Toy Models of Superposition").

The ReLU-output model compresses ``F`` sparse features into ``m < F`` hidden dimensions with a
single matrix ``W [m, F]`` and reconstructs them as ``x' = ReLU(W^T W x + b)``. Each feature is
independently non-zero with probability ``p`` (= 1 - sparsity ``S``) and, when non-zero, uniform on
``[0, 1)``; feature ``i`` carries importance ``I_i = decay**i`` in the loss.

Besides training and the geometry measures of the paper (``D*`` and the per-feature dimensionality
``D_i``), a trained model is an activation source with exactly known latents:
:func:`toy_activations` returns the hidden activations ``h = W x`` together with the sparse feature
codes and the true directions (the columns of ``W``).

All randomness flows through explicit ``torch.Generator`` objects: the same config (and seed) gives
bit-identical weights on the same machine and library versions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from groundtruth.checks import check_int, check_real
from groundtruth.config import Config
from groundtruth.latents import ActivationBatch, SparseCodes
from groundtruth.seeding import child_seed

__all__ = [
    "HiddenLayerSource",
    "ToyModel",
    "ToyModelConfig",
    "dimensions_per_feature",
    "feature_dimensionality",
    "importances",
    "sample_features",
    "toy_activations",
    "train_toy_model",
]

logger = logging.getLogger(__name__)

_MAX_SEED = 2**64 - 1  # the range torch.Generator.manual_seed accepts for non-negative seeds


@dataclass(frozen=True)
class ToyModelConfig(Config):
    """Configuration of a toy model of superposition and its training run.

    Defaults follow the 5-features-in-2-dimensions setting of Elhage et al. (2022).

    Attributes:
        n_features: number of features ``F`` (>= 1).
        d_hidden: hidden dimensions ``m`` (>= 1).
        feature_probability: probability ``p`` that each feature is non-zero, ``1 - S``; in (0, 1].
        importance_decay: importance of feature ``i`` is ``importance_decay**i``; in (0, 1].
        steps: number of optimiser steps (>= 1).
        batch_size: samples per step (>= 1).
        lr: AdamW learning rate (> 0).
        weight_decay: AdamW weight decay (>= 0; 0 makes AdamW plain Adam, as in the paper).
        seed: seeds the single ``torch.Generator`` used for initialisation and data (>= 0).
    """

    n_features: int = 5
    d_hidden: int = 2
    feature_probability: float = 0.1
    importance_decay: float = 0.9
    steps: int = 5_000
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("n_features", self.n_features)
        check_int("d_hidden", self.d_hidden)
        check_int("steps", self.steps)
        check_int("batch_size", self.batch_size)
        check_int("seed", self.seed, 0, _MAX_SEED)
        check_real("feature_probability", self.feature_probability, 0.0, 1.0, low_open=True)
        check_real("importance_decay", self.importance_decay, 0.0, 1.0, low_open=True)
        check_real("lr", self.lr, 0.0, math.inf, low_open=True, high_open=True)
        check_real("weight_decay", self.weight_decay, 0.0, math.inf, high_open=True)


def importances(cfg: ToyModelConfig) -> torch.Tensor:
    """Feature importances ``I_i = importance_decay**i``, float32 ``[F]``."""
    exponents = torch.arange(cfg.n_features, dtype=torch.float64)
    return (cfg.importance_decay**exponents).to(torch.float32)


class ToyModel(nn.Module):
    """The ReLU-output toy model: ``x' = ReLU(W^T W x + b)``.

    Parameters ``W [d_hidden, n_features]`` (xavier-normal init) and ``b [n_features]`` (zeros).
    ``W`` is drawn from ``generator`` if given (a CPU ``torch.Generator``, advanced by the draw),
    else from a fresh one seeded with ``config.seed``. Column ``W[:, i]`` is the direction in which
    feature ``i`` is embedded in the hidden space.
    """

    def __init__(self, config: ToyModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(config, ToyModelConfig):
            raise TypeError(f"config must be a ToyModelConfig, got {type(config).__name__}")
        self.config = config
        if generator is None:
            generator = torch.Generator().manual_seed(config.seed)
        elif not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.W = nn.Parameter(torch.empty(config.d_hidden, config.n_features))
        self.b = nn.Parameter(torch.zeros(config.n_features))
        with torch.no_grad():
            nn.init.xavier_normal_(self.W, generator=generator)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim < 1 or x.shape[-1] != self.config.n_features:
            raise ValueError(f"x must have shape [..., n_features={self.config.n_features}], got {tuple(x.shape)}")

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden activations ``h = x @ W.T``: ``[..., F] -> [..., m]``."""
        self._check_input(x)
        return x @ self.W.T

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """The computation downstream of the hidden layer, ``ReLU(h @ W + b)``: ``[..., m] -> [..., F]``;
        an SAE's reconstruction of ``h`` is judged by it when spliced in (:mod:`toymodels.splice`)."""
        if not isinstance(h, torch.Tensor) or h.ndim < 1 or h.shape[-1] != self.config.d_hidden:
            raise ValueError(f"h must be a tensor of shape [..., d_hidden={self.config.d_hidden}], got {h!r:.80}")
        return torch.relu(h @ self.W + self.b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``ReLU(hidden(x) @ W + b)``: ``[..., F] -> [..., F]``."""
        return self.output(self.hidden(x))


def sample_features(n: int, cfg: ToyModelConfig, generator: torch.Generator) -> torch.Tensor:
    """Draw ``n`` feature vectors, float32 ``[n, F]`` on ``generator.device``.

    Each feature is independently non-zero with probability ``cfg.feature_probability``; a non-zero
    feature is uniform on ``[0, 1)``. (A uniform draw of exactly 0.0 is possible, with probability
    about 2**-24, and is then indistinguishable from an inactive feature.)
    """
    check_int("n", n, 0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    shape = (n, cfg.n_features)
    device = generator.device
    values = torch.rand(shape, generator=generator, device=device)
    if cfg.feature_probability >= 1.0:
        return values
    active = torch.rand(shape, generator=generator, device=device) < cfg.feature_probability
    return torch.where(active, values, torch.zeros((), device=device))


def train_toy_model(
    cfg: ToyModelConfig,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> ToyModel:
    """Train a :class:`ToyModel` with AdamW on fresh samples every step.

    The loss is the batch mean of the importance-weighted squared error
    ``sum_i I_i (x_i - x'_i)**2``. Initialisation and then every batch come from one CPU
    ``torch.Generator`` seeded with ``cfg.seed`` (the initial weights equal ``ToyModel(cfg)``'s;
    data is drawn on the CPU and moved to ``device``), so a run is deterministic.

    Args:
        cfg: model and training configuration.
        progress: show a ``tqdm.auto`` progress bar.
        device: where to train; the returned model stays there.
    """
    if not isinstance(cfg, ToyModelConfig):
        raise TypeError(f"cfg must be a ToyModelConfig, got {type(cfg).__name__}")
    device = torch.device(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = ToyModel(cfg, generator=generator).to(device)
    weights = importances(cfg).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    logger.info(
        "training toy model: F=%d m=%d p=%g decay=%g steps=%d batch=%d lr=%g seed=%d",
        cfg.n_features,
        cfg.d_hidden,
        cfg.feature_probability,
        cfg.importance_decay,
        cfg.steps,
        cfg.batch_size,
        cfg.lr,
        cfg.seed,
    )
    model.train()
    loss = torch.zeros(())
    report_every = max(1, cfg.steps // 100)
    with tqdm(range(cfg.steps), desc="toy model", disable=not progress) as bar:
        for step in bar:
            x = sample_features(cfg.batch_size, cfg, generator).to(device)
            loss = ((x - model(x)) ** 2 @ weights).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if progress and (step % report_every == 0 or step == cfg.steps - 1):
                bar.set_postfix(loss=f"{loss.item():.3g}")
    final = loss.item()
    if not math.isfinite(final):
        logger.warning("toy model training ended with non-finite loss %r", final)
    logger.info("trained toy model: final batch loss %.6g", final)
    model.eval()
    return model


def _weights(model: ToyModel) -> torch.Tensor:
    if not isinstance(model, ToyModel):
        raise TypeError(f"model must be a ToyModel, got {type(model).__name__}")
    return model.W.detach()


def dimensions_per_feature(model: ToyModel) -> float:
    """Elhage's ``D* = m / ||W||_F**2``: hidden dimensions per embedded feature.

    Returns ``inf`` when ``W`` is zero.
    """
    W = _weights(model).to(torch.float64)
    frob = float((W**2).sum())
    return math.inf if frob == 0.0 else W.shape[0] / frob


def feature_dimensionality(model: ToyModel) -> torch.Tensor:
    """Per-feature dimensionality ``D_i = ||W_i||**2 / sum_j (What_i . W_j)**2``, ``[F]``.

    ``W_i`` is the i-th column of ``W`` and ``What_i`` its unit vector. ``D_i`` is 1 for a feature
    with a dedicated orthogonal dimension, 1/2 for an antipodal pair, 0 for a feature that is not
    represented (a zero column, by definition). Values lie in ``[0, 1]``. Returned in ``W``'s dtype
    and device; computed in float64.
    """
    W = _weights(model).to(torch.float64)
    sq_norms = (W**2).sum(dim=0)  # [F]
    nonzero = sq_norms > 0
    unit = W / torch.where(nonzero, sq_norms.sqrt(), torch.ones_like(sq_norms))
    overlaps = unit.T @ W  # [F, F]: What_i . W_j
    overlaps.fill_diagonal_(0.0)
    # The j = i term of the sum is exactly ||W_i||**2; adding it separately keeps D_i <= 1 in
    # floating point (a / (a + b) <= 1 for b >= 0 under monotone rounding).
    denom = sq_norms + (overlaps**2).sum(dim=1)
    dims = torch.where(nonzero, sq_norms / torch.where(nonzero, denom, 1.0), 0.0)
    return dims.to(model.W.dtype)


def toy_activations(model: ToyModel, n: int, generator: torch.Generator) -> ActivationBatch:
    """Sample ``n`` feature vectors and return the model's hidden activations with ground truth.

    ``x = hidden(features)`` ``[n, m]``; ``codes`` holds the non-zero entries of the features (rows
    sorted, then columns); ``directions`` is ``W``'s columns as rows, ``[F, m]``, a detached copy.

    The directions are NOT normalised (unlike most sources' unit rows): ``x == codes.to_dense() @
    directions`` holds exactly (same matmul, same operand layout). Scorers (MMCS, MCC, ...)
    normalise directions themselves, so cosine metrics are unaffected; code magnitudes are in units
    of the unnormalised columns, and a column of ``W`` may be (near) zero for a feature the model
    does not represent.

    Features are drawn on ``generator.device`` and moved to the model's device.
    """
    W = _weights(model)
    features = sample_features(n, model.config, generator).to(W.device)
    # .T.clone() keeps the transposed strides, so features @ directions is the very same matmul as
    # hidden(features) = features @ W.T.
    directions = W.T.clone()
    with torch.no_grad():
        x = features @ directions
    rows, cols = features.nonzero(as_tuple=True)  # row-major: rows sorted, then cols
    codes = SparseCodes(
        rows=rows.to(torch.int64),
        cols=cols.to(torch.int64),
        values=features[rows, cols].to(torch.float32),
        shape=(n, model.config.n_features),
    )
    return ActivationBatch(x=x, codes=codes, directions=directions)


class HiddenLayerSource:
    """The toy model's hidden layer as an activation source, with the same stream/eval interface as
    :class:`groundtruth.SparseFeatureModel`: true directions are W's columns, codes the input features."""

    def __init__(self, model: ToyModel, seed: int = 0) -> None:
        self.model = model
        self.seed = seed
        self.parent = torch.full((model.config.n_features,), -1, dtype=torch.int64)

    def _generator(self, name: str) -> torch.Generator:
        return torch.Generator().manual_seed(child_seed(self.seed, name))

    def stream(self, batch_size: int, seed: int = 0) -> Iterator[ActivationBatch]:
        """An endless stream of training batches; ``seed`` picks the stream."""
        g = self._generator(f"stream/{seed}")
        while True:
            yield toy_activations(self.model, batch_size, g)

    def activations(self, batch_size: int, seed: int = 0) -> Iterator[torch.Tensor]:
        return (batch.x for batch in self.stream(batch_size, seed))

    def eval_set(self, n: int, seed: int = 0) -> ActivationBatch:
        return toy_activations(self.model, n, self._generator(f"eval/{seed}"))
