"""Which features fire in each sample: independent, low-rank Gaussian copula, or full copula.

A Gaussian copula makes feature ``i`` fire when ``z_i > tau_i`` with ``z ~ N(0, C)`` drawn per sample
and ``tau_i = Phi^{-1}(1 - p_i)``, so each feature keeps its marginal probability ``p_i`` while
firings co-vary with the correlation matrix ``C``.

All samplers are exact and return the firing set as sorted flat keys ``row * n_features + col``.
They avoid touching every (sample, feature) pair where they can: independent firing costs
O(L0 log F) per sample, and the low-rank copula pays one ``[n, rank] @ [rank, F]`` product plus
O(L0) work by thinning a Poisson process (see :class:`LowRankFiring`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from groundtruth.checks import check_int, check_real
from groundtruth.config import Config


@dataclass(frozen=True)
class LowRank(Config):
    """Low-rank copula ``C = U Uᵀ + diag(1 - ‖u_i‖²)`` with ``U ~ N(0, scale²)`` of shape [F, rank].

    Rows whose norm would exceed ``sqrt(0.99)`` are shrunk to it, so C stays a correlation matrix.
    This is the SynthSAEBench construction (rank 25, scale 0.1).
    """

    rank: int
    scale: float

    def __post_init__(self) -> None:
        check_int("LowRank.rank", self.rank)
        check_real("LowRank.scale", self.scale, 0.0)

    def factor(self, n_features: int, generator: torch.Generator) -> torch.Tensor:
        u = torch.randn(n_features, self.rank, generator=generator, dtype=torch.float64) * self.scale
        norms = u.norm(dim=1, keepdim=True)
        limit = math.sqrt(0.99)
        return torch.where(norms > limit, u * (limit / norms), u)


@dataclass(frozen=True)
class RandomCorrelation(Config):
    """A dense random correlation matrix ``(1 - strength) I + strength R``.

    ``R`` is a normalised Wishart matrix ``G Gᵀ`` with ``G ~ N(0, 1)`` of shape [F, F], so firings
    correlate both positively and negatively (the correlated setting of Sharkey et al. 2022).
    """

    strength: float

    def __post_init__(self) -> None:
        check_real("RandomCorrelation.strength", self.strength, 0.0, 1.0)

    def matrix(self, n_features: int, generator: torch.Generator) -> torch.Tensor:
        g = torch.randn(n_features, n_features, generator=generator, dtype=torch.float64)
        s = g @ g.T
        d = s.diagonal().rsqrt()
        r = s * d[:, None] * d[None, :]
        return (1 - self.strength) * torch.eye(n_features, dtype=torch.float64) + self.strength * r


Correlation = LowRank | RandomCorrelation


def thresholds(p: torch.Tensor) -> torch.Tensor:
    """``tau = Phi^{-1}(1 - p)``: a standard normal exceeds it with probability ``p`` (+inf at 0, -inf at 1)."""
    return math.sqrt(2) * torch.erfinv(1 - 2 * p.double().clamp(0, 1))


def _split_certain(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of features that always fire (p = 1) and of those that sometimes do (0 < p < 1)."""
    return torch.nonzero(p >= 1).flatten(), torch.nonzero((p > 0) & (p < 1)).flatten()


def sort_keys(keys: torch.Tensor) -> torch.Tensor:
    """``keys`` sorted ascending. NumPy's SIMD sort of int64 is several times faster than torch's on CPU."""
    return torch.from_numpy(np.sort(keys.numpy()))


def _runs(t: torch.Tensor, width: int, dim: int = 0) -> torch.Tensor:
    """A view of ``t`` whose entry ``k`` along ``dim`` is ``t``'s slices ``k .. k + width - 1``."""
    return t.unfold(dim, width, 1).movedim(-1, dim + 1)


def _with_always(keys: torch.Tensor, always: torch.Tensor, n: int, n_features: int) -> torch.Tensor:
    if always.numel() == 0:
        return keys
    extra = (torch.arange(n).unsqueeze(1) * n_features + always.unsqueeze(0)).flatten()
    return sort_keys(torch.cat([keys, extra]))


def _poisson_cells(cumulative: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Points of a unit-rate Poisson process on ``[0, cumulative[-1])``, located in their cells.

    The points are drawn in increasing order, as running sums of Exp(1) gaps, so locating them in
    the cumulative hazard is a merge of two sorted arrays (NumPy's ``searchsorted`` exploits sorted
    keys; torch's does not). Returns each point's cell index (sorted) and its offset from the cell's start.
    """
    total = float(cumulative[-1]) if cumulative.numel() else 0.0
    if total <= 0:
        empty = torch.empty(0, dtype=torch.int64)
        return empty, empty.double()
    draw = int(total + 8 * math.sqrt(total)) + 16  # enough gaps to pass `total` almost always
    pos = torch.empty(draw, dtype=torch.float64).exponential_(generator=generator).cumsum(0)
    while float(pos[-1]) < total:
        more = torch.empty(draw, dtype=torch.float64).exponential_(generator=generator).cumsum(0)
        pos = torch.cat([pos, pos[-1] + more])
    pos = pos[: int(torch.searchsorted(pos, torch.tensor([total], dtype=torch.float64)))]
    cell = torch.from_numpy(np.searchsorted(cumulative.numpy(), pos.numpy(), side="right"))
    cell = cell.clamp_(max=cumulative.numel() - 1)
    start = torch.where(cell > 0, cumulative[(cell - 1).clamp(min=0)], torch.zeros_like(pos))
    return cell, pos - start


class IndependentFiring:
    """Independent Bernoulli(p_i) firing by inverting one Poisson process.

    Give feature ``i`` hazard ``lambda_i = -log(1 - p_i)`` and lay all (sample, feature) cells end to end
    on a line; a unit-rate Poisson process puts at least one point in a cell with probability
    ``1 - exp(-lambda_i) = p_i``, independently across cells. Only the points are drawn, so a batch
    costs O(n L0 log F) instead of O(n F).

    ``free`` marks the features drawn by :meth:`sample`; the others (hierarchy children) are only
    drawn on demand, for given cells, by :meth:`fire_runs`.
    """

    def __init__(self, p: torch.Tensor, free: torch.Tensor):
        self.p = p.double()
        self.n_features = p.numel()
        p_free = torch.where(free, self.p, torch.zeros_like(self.p))
        self.always, sometimes = _split_certain(p_free)
        hazard = torch.zeros(self.n_features, dtype=torch.float64)
        hazard[sometimes] = -torch.log1p(-p_free[sometimes])
        self.cumulative = hazard.cumsum(0)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, None]:
        per_row = float(self.cumulative[-1]) if self.n_features else 0.0
        keys = torch.empty(0, dtype=torch.int64)
        if per_row > 0:
            # n rows laid end to end: cumulative hazard of cell (r, i) is r * per_row + cumulative[i].
            count = int(torch.poisson(torch.tensor([n * per_row], dtype=torch.float64), generator=generator))
            pos = torch.rand(count, generator=generator, dtype=torch.float64) * (n * per_row)
            rows = (pos / per_row).floor().clamp_(max=n - 1)
            cols = torch.searchsorted(self.cumulative, pos - rows * per_row, right=True)
            keys = torch.unique_consecutive(
                sort_keys(rows.long() * self.n_features + cols.clamp_(max=self.n_features - 1))
            )
        return _with_always(keys, self.always, n, self.n_features), None

    def fire_runs(
        self, rows: torch.Tensor, first: torch.Tensor, width: int, state: None, generator: torch.Generator
    ) -> torch.Tensor:
        """Whether cells ``(rows[k], first[k] + j)``, ``j < width``, fire: a ``[len(rows), width]`` mask."""
        p = _runs(self.p, width).index_select(0, first)
        return torch.rand(p.shape, generator=generator, dtype=torch.float64) < p


# Upper bounds on a block's firing probability, tabulated: log_ndtr costs ~40 ns a value, a lookup ~5.
_GRID_LO, _GRID_STEP = -1.0, 1.0 / 64
_GRID = _GRID_LO + _GRID_STEP * torch.arange(13 * 64 + 1, dtype=torch.float64)  # c in [-1, 12]
_Q_GRID = torch.special.ndtr(-_GRID)
_HAZARD_GRID = -torch.special.log_ndtr(_GRID)


def _block_bound(c_min: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hazard ``-log Phi(g)`` and probability ``Phi(-g)`` at the grid point ``g <= c_min``: upper bounds
    on ``-log Phi(c_min)`` and ``P(eta > c_min)``, which is all thinning needs to stay exact. Below the
    grid the hazard exceeds 1, which makes the block dense anyway."""
    index = ((c_min.double() - _GRID_LO) / _GRID_STEP).floor_().long().clamp_(0, _GRID.numel() - 1)
    return _HAZARD_GRID.index_select(0, index), _Q_GRID.index_select(0, index)


class LowRankFiring:
    """Exact low-rank Gaussian-copula firing, drawn per sample, by thinning.

    Per sample draw ``w ~ N(0, I_rank)``; given ``w``, feature ``i`` fires independently with
    probability ``q_i = P(eta > c_i)``, ``c_i = (tau_i - u_i·w) / s_i``, ``s_i = sqrt(1 - ‖u_i‖²)``.
    Free features are sorted by ``tau`` and cut into blocks of ``block``; every cell of a block
    becomes a candidate with the block's largest probability (a Poisson process as in
    :class:`IndependentFiring`), and a candidate is kept with probability ``q_i / q_block``.
    The per-sample ``w`` is returned as state so that :meth:`fire_runs` can draw other cells later.
    """

    block = 32

    def __init__(self, p: torch.Tensor, free: torch.Tensor, factor: torch.Tensor):
        self.n_features = p.numel()
        self.rank = factor.shape[1]
        u = factor.double()
        s = (1 - (u * u).sum(1)).sqrt()
        tau = thresholds(p)
        self.u_over_s = (u / s[:, None]).float()
        self.tau_over_s = (tau / s).float()
        p_free = torch.where(free, p.double(), torch.zeros_like(p.double()))
        self.always, sometimes = _split_certain(p_free)
        order = sometimes[torch.argsort(tau[sometimes])]
        self.cols = order
        padded = -(-order.numel() // self.block) * self.block
        # c = w @ m_weight + m_bias; padding columns get a huge c so they never fire.
        self.m_weight = torch.zeros(self.rank, padded)
        self.m_weight[:, : order.numel()] = -self.u_over_s[order].T
        self.m_bias = torch.full((padded,), 1e4)
        self.m_bias[: order.numel()] = self.tau_over_s[order]

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Firing keys for ``n`` samples and their copula state ``w``. Costs an ``[n, F]`` product:
        callers bound ``n`` (the model draws blocks of 1,024 rows)."""
        w = torch.randn(n, self.rank, generator=generator)
        b, padded = self.block, self.m_bias.numel()
        if padded == 0:
            return _with_always(torch.empty(0, dtype=torch.int64), self.always, n, self.n_features), w
        c = torch.addmm(self.m_bias, w, self.m_weight)  # [n, padded]
        c_min = c.view(n, padded // b, b).amin(-1)
        hazard, q_bound = _block_bound(c_min.flatten())  # per cell of each block
        # A block whose hazard exceeds 1 would put hazard * b Poisson points (unbounded as the copula
        # pushes q towards 1) into its b cells: take all b cells as candidates instead (bound 1).
        dense = hazard > 1.0
        sparse_hazard = torch.where(dense, torch.zeros_like(hazard), hazard)
        cell, offset = _poisson_cells((sparse_hazard * b).cumsum(0), generator)
        within = (
            (offset / sparse_hazard.index_select(0, cell)).nan_to_num(0.0, 0.0, 0.0).floor().long().clamp_(0, b - 1)
        )
        every = (torch.nonzero(dense).flatten().unsqueeze(1) * b + torch.arange(b)).flatten()
        # Points come in increasing order, so `cell * b + within` never decreases: repeats are adjacent.
        # Dense blocks have no points, so `every` is disjoint from them.
        flat = torch.cat([torch.unique_consecutive(cell * b + within), every])  # index into c.flatten()
        q = torch.special.ndtr(-c.flatten().index_select(0, flat).double())
        block = flat // b
        bound = torch.where(dense.index_select(0, block), 1.0, q_bound.index_select(0, block))
        flat = flat[torch.rand(flat.numel(), generator=generator, dtype=torch.float64) * bound < q]
        keys = (flat // padded) * self.n_features + self.cols[flat % padded]
        return _with_always(sort_keys(keys), self.always, n, self.n_features), w

    def fire_runs(
        self, rows: torch.Tensor, first: torch.Tensor, width: int, state: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """As :meth:`IndependentFiring.fire_runs`, given the rows' copula state ``w``. A run shares its
        row, so each row's ``w`` is gathered once for the whole run."""
        u = _runs(self.u_over_s, width).index_select(0, first)  # [runs, width, rank]
        c = _runs(self.tau_over_s, width).index_select(0, first) - (u * state.index_select(0, rows)[:, None]).sum(2)
        q = torch.special.ndtr(-c.double())
        return torch.rand(q.shape, generator=generator, dtype=torch.float64) < q


class FullFiring:
    """Dense Gaussian copula with an arbitrary correlation matrix (O(F²) per sample)."""

    def __init__(self, p: torch.Tensor, free: torch.Tensor, correlation: torch.Tensor):
        self.n_features = p.numel()
        self.free = free
        evals, evecs = torch.linalg.eigh(correlation.double())
        self.root = (evecs * evals.clamp(min=0).sqrt()).float().T.contiguous()  # z = eta @ root
        self.tau = thresholds(p).float()

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(n, self.n_features, generator=generator) @ self.root
        return torch.nonzero(((z > self.tau) & self.free).flatten()).flatten(), z

    def fire_runs(
        self, rows: torch.Tensor, first: torch.Tensor, width: int, state: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """As :meth:`IndependentFiring.fire_runs`, read off the rows' drawn ``z``."""
        z = _runs(state, width, dim=1)[rows, first]
        return z > _runs(self.tau, width).index_select(0, first)


def check_correlation_matrix(name: str, c: torch.Tensor, n_features: int) -> torch.Tensor:
    """Validate a user-supplied correlation matrix: symmetric, unit diagonal, PSD."""
    if c.shape != (n_features, n_features):
        raise ValueError(f"{name} must have shape ({n_features}, {n_features}), got {tuple(c.shape)}")
    c = c.double()
    if not torch.isfinite(c).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if not torch.allclose(c, c.T, atol=1e-6):
        raise ValueError(f"{name} must be symmetric")
    if not torch.allclose(c.diagonal(), torch.ones(n_features, dtype=c.dtype), atol=1e-6):
        raise ValueError(
            f"{name} must have a unit diagonal, got diagonal values in "
            f"[{float(c.diagonal().min()):.4g}, {float(c.diagonal().max()):.4g}]"
        )
    smallest = float(torch.linalg.eigvalsh(c).min())
    if smallest < -1e-6:
        raise ValueError(f"{name} is not positive semi-definite (smallest eigenvalue {smallest:.4g})")
    return c
