"""Per-feature firing probabilities.

Each schedule is a frozen dataclass whose :meth:`probabilities` returns a float64 array of length
``n_features`` in feature order. Feature 0 is the most frequent wherever the schedule decays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from groundtruth.checks import check_real
from groundtruth.config import Config


@dataclass(frozen=True)
class Constant(Config):
    """Every feature fires with probability ``p``."""

    p: float

    def __post_init__(self) -> None:
        check_real("Constant.p", self.p, 0.0, 1.0)

    def probabilities(self, n: int) -> np.ndarray:
        return np.full(n, self.p)


@dataclass(frozen=True)
class Geometric(Config):
    """``p_i = p0 * ratio**i``: the decaying frequencies of Sharkey et al. (2022)."""

    ratio: float
    p0: float = 1.0

    def __post_init__(self) -> None:
        check_real("Geometric.ratio", self.ratio, 0.0, 1.0, low_open=True)
        check_real("Geometric.p0", self.p0, 0.0, 1.0)

    def probabilities(self, n: int) -> np.ndarray:
        return self.p0 * self.ratio ** np.arange(n, dtype=np.float64)


@dataclass(frozen=True)
class Linear(Config):
    """Probabilities interpolated linearly from ``start`` (feature 0) to ``end`` (last feature)."""

    start: float
    end: float

    def __post_init__(self) -> None:
        check_real("Linear.start", self.start, 0.0, 1.0)
        check_real("Linear.end", self.end, 0.0, 1.0)

    def probabilities(self, n: int) -> np.ndarray:
        return np.linspace(self.start, self.end, n) if n > 1 else np.array([self.start])


@dataclass(frozen=True)
class Zipf(Config):
    """``1 / rank**exponent`` mapped affinely onto ``[p_min, p_max]`` (the SynthSAEBench recipe)."""

    exponent: float
    p_min: float
    p_max: float

    def __post_init__(self) -> None:
        check_real("Zipf.exponent", self.exponent, 0.0, low_open=True)
        check_real("Zipf.p_min", self.p_min, 0.0, 1.0)
        check_real("Zipf.p_max", self.p_max, 0.0, 1.0)
        if self.p_min > self.p_max:
            raise ValueError(f"Zipf.p_min ({self.p_min}) must not exceed Zipf.p_max ({self.p_max})")

    def probabilities(self, n: int) -> np.ndarray:
        if n == 1:
            return np.array([self.p_max])
        raw = np.arange(1, n + 1, dtype=np.float64) ** -self.exponent
        return self.p_min + (self.p_max - self.p_min) * (raw - raw[-1]) / (raw[0] - raw[-1])


Schedule = Constant | Geometric | Linear | Zipf


def firing_probabilities(schedule: Schedule, n: int, target_l0: float | None = None) -> np.ndarray:
    """The schedule's probabilities, optionally rescaled so that they sum to ``target_l0``."""
    p = schedule.probabilities(n)
    if target_l0 is not None:
        check_real("target_l0", target_l0, 0.0, float(n), low_open=True)
        total = p.sum()
        if total <= 0:
            raise ValueError(f"cannot rescale all-zero firing probabilities to target_l0={target_l0}")
        p = p * (target_l0 / total)
        if p.max() > 1.0 + 1e-12:  # an ulp over 1 is rounding (e.g. a flat schedule scaled to target_l0 = n)
            raise ValueError(
                f"target_l0={target_l0} needs a firing probability of {p.max():.3g} > 1 for "
                f"this schedule; lower target_l0 or flatten the schedule"
            )
        p = np.minimum(p, 1.0)
    return p
