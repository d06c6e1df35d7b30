"""True feature directions: random unit vectors, optionally pushed apart to a maximum overlap."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from groundtruth.checks import check_int, check_real
from groundtruth.config import Config

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Directions(Config):
    """Random unit directions; with ``max_overlap`` set, no pair has ``|cos| > max_overlap``.

    Only pairs above the target are moved, and after the first sweep only rows that moved are
    re-checked, so 16,384 × 768 takes seconds rather than the minute of a full-Gram optimiser.
    """

    max_overlap: float | None = None
    max_rounds: int = 200

    def __post_init__(self) -> None:
        if self.max_overlap is not None:
            check_real("Directions.max_overlap", self.max_overlap, 0.0, 1.0, low_open=True)
        check_int("Directions.max_rounds", self.max_rounds)

    def build(self, n_features: int, d: int, generator: torch.Generator) -> torch.Tensor:
        dirs = torch.randn(n_features, d, generator=generator)
        dirs = dirs / dirs.norm(dim=1, keepdim=True)
        if self.max_overlap is not None:
            dirs = push_apart(dirs, self.max_overlap, self.max_rounds)
        return dirs


def welch_bound(n: int, d: int) -> float:
    """The smallest achievable maximum |cos| among ``n`` unit vectors in ``d`` dimensions."""
    return 0.0 if n <= d else math.sqrt((n - d) / (d * (n - 1)))


def _violations(dirs: torch.Tensor, rows: torch.Tensor, target: float, chunk: int = 2048):
    """Pairs (i in rows, j any, i != j) with |cos| > target, and their cosines."""
    found_i, found_j, found_c = [], [], []
    for start in range(0, rows.numel(), chunk):
        r = rows[start : start + chunk]
        cos = dirs[r] @ dirs.T
        cos[torch.arange(r.numel()), r] = 0.0
        i, j = torch.nonzero(cos.abs() > target, as_tuple=True)
        found_i.append(r[i])
        found_j.append(j)
        found_c.append(cos[i, j])
    return torch.cat(found_i), torch.cat(found_j), torch.cat(found_c)


def push_apart(dirs: torch.Tensor, max_overlap: float, max_rounds: int = 200, patience: int = 10) -> torch.Tensor:
    """Move unit rows apart until every pair has ``|cos| <= max_overlap``.

    Each round turns every row of a violating pair away from the other row's line by the angle it
    lacks (aiming slightly below the target) and renormalises; only rows touched in the last round
    are re-checked.
    In few dimensions, pushing one pair apart pushes another together and the count of violations
    stalls; after ``patience`` rounds without progress, pairs just under the target are pushed too,
    with full steps, a lower aim and every row re-checked each round.
    """
    n, d = dirs.shape
    bound = welch_bound(n, d)
    if max_overlap < bound:
        raise ValueError(
            f"max_overlap={max_overlap} is below the Welch bound {bound:.4f} for {n} directions "
            f"in {d} dimensions; no arrangement can reach it"
        )
    # Margins shrink with the room left below 1, so that a target near 1 is not aimed at an overlap
    # no arrangement reaches (12 lines in the plane cannot all be below cos 15° = 0.966).
    room = min(max_overlap, 1 - max_overlap)
    threshold, aim, rate = max_overlap, max_overlap - 0.03 * room, 0.5
    dirs = dirs.clone()
    rows = torch.arange(n)
    fewest, stalled = n * n, 0
    for _ in range(max_rounds):
        i, j, c = _violations(dirs, rows, threshold)
        if i.numel() == 0:  # pairs outside ``rows`` did not move since they were last checked
            return dirs
        # Turn row i away from row j's line within their plane, by the angle still missing: a push
        # along -dirs[j] would barely turn nearly parallel rows. Average (not sum) the turns a row
        # receives, so crowded rows do not overshoot.
        crowd = torch.bincount(i, minlength=n).clamp(min=1)[i]
        angle = (math.acos(aim) - torch.acos(c.abs().clamp(max=1.0))) / crowd
        toward = (dirs[j] - c[:, None] * dirs[i]) * c.sign()[:, None]  # tangent at row i, toward j's line
        away = -toward / toward.norm(dim=1, keepdim=True).clamp(min=1e-12)
        dirs.index_add_(0, i, rate * angle[:, None] * away)
        dirs = dirs / dirs.norm(dim=1, keepdim=True)
        fewest, stalled = (i.numel(), 0) if i.numel() < fewest else (fewest, stalled + 1)
        if stalled >= patience:  # stalled: widen the margin and re-check every row each round
            threshold, aim, rate = max_overlap - 0.01 * room, max_overlap - 0.05 * room, 1.0
            rows = torch.arange(n)
        else:
            rows = torch.unique(torch.cat([i, j]))
    worst = float(largest_overlap(dirs))
    if worst > max_overlap:
        raise ValueError(
            f"could not reach max_overlap={max_overlap} in {max_rounds} rounds (reached {worst:.4f}); "
            f"raise Directions.max_rounds or the target (Welch bound {bound:.4f})"
        )
    return dirs


def largest_overlap(dirs: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """The largest |cos| between two distinct rows of ``dirs`` (unit rows), computed in chunks."""
    worst = torch.tensor(0.0)
    for start in range(0, dirs.shape[0], chunk):
        cos = dirs[start : start + chunk] @ dirs.T
        cos[torch.arange(cos.shape[0]), torch.arange(start, start + cos.shape[0])] = 0.0
        worst = torch.maximum(worst, cos.abs().max())
    return worst
