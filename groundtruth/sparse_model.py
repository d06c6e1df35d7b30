"""Sparse feature models: activations ``x = sum_i c_i f_i + bias (+ noise)`` with known f and c."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from groundtruth.checks import check_int, check_real, check_tensor
from groundtruth.config import Config
from groundtruth.correlation import (
    Correlation,
    FullFiring,
    IndependentFiring,
    LowRank,
    LowRankFiring,
    RandomCorrelation,
    check_correlation_matrix,
)
from groundtruth.directions import Directions
from groundtruth.firing import Constant, Schedule, firing_probabilities
from groundtruth.hierarchy import Forest, Hierarchy
from groundtruth.latents import ActivationBatch, SparseCodes
from groundtruth.magnitudes import Magnitude, Uniform
from groundtruth.prefetch import Prefetch
from groundtruth.seeding import child_seed
from groundtruth.threads import map_threads


@dataclass(frozen=True)
class SparseFeatureConfig(Config):
    """Everything that defines a sparse feature model. Same config, same seed: same bytes."""

    d: int
    n_features: int
    firing: Schedule = field(default_factory=lambda: Constant(0.01))
    target_l0: float | None = None
    magnitude: Magnitude = field(default_factory=Uniform)
    correlation: Correlation | None = None
    hierarchy: Hierarchy | None = None
    directions: Directions = field(default_factory=Directions)
    bias_norm: float = 0.0
    noise_std: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("d", self.d)
        check_int("n_features", self.n_features)
        check_real("bias_norm", self.bias_norm, 0.0)
        check_real("noise_std", self.noise_std, 0.0)
        check_int("seed", self.seed, minimum=0)
        if self.hierarchy is not None and self.hierarchy.n_nodes > self.n_features:
            raise ValueError(f"hierarchy has {self.hierarchy.n_nodes} nodes but n_features={self.n_features}")


class SparseFeatureModel:
    """A seeded generator of activations with their true directions and codes.

    ``directions`` and ``correlation_matrix`` let a user supply their own dictionary ``[F, d]`` or
    full correlation matrix ``[F, F]`` instead of the config's random ones.
    """

    def __init__(
        self,
        config: SparseFeatureConfig,
        *,
        directions: torch.Tensor | None = None,
        correlation_matrix: torch.Tensor | None = None,
    ):
        self.config = cfg = config
        n, d = cfg.n_features, cfg.d
        gen = lambda name: torch.Generator().manual_seed(child_seed(cfg.seed, name))  # noqa: E731
        if directions is None:
            directions = cfg.directions.build(n, d, gen("directions"))
        else:
            directions = check_tensor("directions", directions, shape=(n, d)).float().clone()
        self.directions = directions
        bias = torch.randn(d, generator=gen("bias"))
        self.bias = bias * (cfg.bias_norm / bias.norm()) if cfg.bias_norm > 0 else torch.zeros(d)
        self.forest = Forest.build(cfg.hierarchy, n) if cfg.hierarchy is not None else None
        p = torch.from_numpy(firing_probabilities(cfg.firing, n, cfg.target_l0))
        if self.forest is not None and cfg.hierarchy.compensate:
            p = self.forest.compensate(p)
        self.probabilities = p
        self.magnitude_params = cfg.magnitude.per_feature(n, gen("magnitudes"))
        self.mean_magnitude = _mean_magnitude(cfg.magnitude, *self.magnitude_params)
        free = self.forest.free if self.forest is not None else torch.ones(n, dtype=torch.bool)
        if correlation_matrix is not None:
            c = check_correlation_matrix("correlation_matrix", correlation_matrix, n)
            self._firing = FullFiring(p, free, c)
        elif isinstance(cfg.correlation, LowRank):
            self._firing = LowRankFiring(p, free, cfg.correlation.factor(n, gen("correlation")))
        elif isinstance(cfg.correlation, RandomCorrelation):
            self._firing = FullFiring(p, free, cfg.correlation.matrix(n, gen("correlation")))
        else:
            self._firing = IndependentFiring(p, free)

    @property
    def parent(self) -> torch.Tensor:
        """``parent[i]``: feature i's parent in the hierarchy, -1 if none."""
        if self.forest is None:
            return torch.full((self.config.n_features,), -1, dtype=torch.int64)
        return self.forest.parent

    block = 1024  # rows drawn from one seeded generator; fixed, so results do not depend on threads

    def sample(self, n: int, generator: torch.Generator) -> ActivationBatch:
        """Draw ``n`` samples. All randomness comes from ``generator``.

        The rows are drawn in blocks of :attr:`block`, each from its own generator seeded from
        ``generator``, on as many threads as torch uses: the same bytes for any thread count.
        """
        return self.sample_blocks(n, self.block_seeds(n, generator))

    def block_seeds(self, n: int, generator: torch.Generator) -> list[int]:
        """The seeds of the blocks of a sample of ``n`` rows, drawn from ``generator``: the cheap, sequential
        part of :meth:`sample`, so that the expensive part (:meth:`sample_blocks`) can run anywhere."""
        check_int("n", n)
        return torch.randint(0, 2**62, (-(-n // self.block),), generator=generator).tolist()

    def sample_blocks(self, n: int, seeds: list[int]) -> ActivationBatch:
        """The sample of ``n`` rows whose blocks have ``seeds`` (from :meth:`block_seeds`):
        ``sample(n, g)`` is ``sample_blocks(n, block_seeds(n, g))``."""
        check_int("n", n)
        starts = range(0, n, self.block)
        if len(seeds) != len(starts):
            raise ValueError(
                f"seeds must hold one seed per block of {self.block} rows ({len(starts)}), got {len(seeds)}"
            )
        if len(starts) == 1:
            return self._sample_block(n, torch.Generator().manual_seed(seeds[0]))
        x = torch.empty(n, self.config.d)

        def block(start: int, seed: int) -> SparseCodes:
            # Each worker writes its rows of x: a concatenation afterwards would run on one thread.
            part = self._sample_block(min(self.block, n - start), torch.Generator().manual_seed(seed))
            x[start : start + len(part)] = part.x
            return part.codes

        codes = map_threads(block, starts, seeds)
        rows = torch.cat([c.rows + start for c, start in zip(codes, starts, strict=True)])
        cols, values = torch.cat([c.cols for c in codes]), torch.cat([c.values for c in codes])
        return ActivationBatch(x, SparseCodes(rows, cols, values, (n, self.config.n_features)), self.directions)

    def _sample_block(self, n: int, generator: torch.Generator) -> ActivationBatch:
        nf = self.config.n_features
        keys, state = self._firing.sample(n, generator)
        if self.forest is not None:
            keys = self.forest.expand(keys, self._firing, state, nf, generator)
        cols = keys % nf
        a, b = self.magnitude_params
        values = self.config.magnitude.draw(a.index_select(0, cols), b.index_select(0, cols), generator)
        if self.forest is not None and self.forest.scale_children:
            values = self.forest.scale(keys, values, self.mean_magnitude, nf)
        rows = keys // nf
        offsets = torch.searchsorted(rows, torch.arange(n))
        x = F.embedding_bag(cols, self.directions, offsets, mode="sum", per_sample_weights=values)
        x = x + self.bias
        if self.config.noise_std > 0:
            x = x + self.config.noise_std * torch.randn(x.shape, generator=generator)
        return ActivationBatch(x, SparseCodes(rows, cols, values, (n, nf)), self.directions)

    def _stream_generator(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(child_seed(self.config.seed, f"stream/{seed}"))

    def stream(self, batch_size: int, seed: int = 0) -> Iterator[ActivationBatch]:
        """An endless stream of training batches; ``seed`` picks the stream."""
        g = self._stream_generator(seed)
        while True:
            yield self.sample(batch_size, g)

    def activations(self, batch_size: int, seed: int = 0) -> Iterator[torch.Tensor]:
        """An endless stream of ``x`` alone, for training loops."""
        return (batch.x for batch in self.stream(batch_size, seed))

    def prefetch(
        self,
        batch_size: int,
        seed: int = 0,
        *,
        workers: int = 2,
        device: str | torch.device | None = None,
        depth: int | None = None,
    ) -> Prefetch[torch.Tensor]:
        """The batches of :meth:`activations` (the same bytes, in the same order), sampled in ``workers``
        processes ahead of the consumer and delivered on ``device``: a data path that keeps a GPU fed.
        Close it, or use it in a ``with`` block, to stop the workers (:class:`groundtruth.prefetch.Prefetch`)."""
        check_int("batch_size", batch_size)
        g = self._stream_generator(seed)
        keys = (self.block_seeds(batch_size, g) for _ in itertools.count())
        return Prefetch(
            functools.partial(_x_of_blocks, self, batch_size), keys, workers=workers, device=device, depth=depth
        )

    def eval_set(self, n: int, seed: int = 0) -> ActivationBatch:
        """A fixed evaluation set, disjoint in randomness from every training stream."""
        return self.sample(n, torch.Generator().manual_seed(child_seed(self.config.seed, f"eval/{seed}")))


def _x_of_blocks(model: SparseFeatureModel, n: int, seeds: list[int]) -> torch.Tensor:
    """A prefetch worker's job: the activations of one batch from its block seeds."""
    return model.sample_blocks(n, seeds).x


def _mean_magnitude(magnitude: Magnitude, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """E[coefficient | fires] per feature, used to scale children by their parent."""
    if isinstance(magnitude, Uniform):
        return a + b / 2
    # Folded normal |N(a, b²)|: b sqrt(2/pi) exp(-a²/2b²) + a (1 - 2 Phi(-a/b)); constant when b = 0.
    safe = b.clamp(min=1e-12)
    folded = safe * np.sqrt(2 / np.pi) * torch.exp(-(a**2) / (2 * safe**2)) + a * (
        1 - 2 * torch.special.ndtr(-a / safe)
    )
    return torch.where(b > 0, folded, a)
