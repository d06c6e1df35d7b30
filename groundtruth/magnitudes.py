"""How large a feature's coefficient is when it fires.

A magnitude distribution draws one positive coefficient per firing; per-feature parameters are fixed
once at model construction (:meth:`per_feature`) so that sampling only touches firing features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from groundtruth.checks import check_real
from groundtruth.config import Config


@dataclass(frozen=True)
class Uniform(Config):
    """Coefficients uniform on ``[low, high)``; ``[0, 1)`` is the Sharkey et al. (2022) choice."""

    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        check_real("Uniform.low", self.low, 0.0)
        check_real("Uniform.high", self.high, self.low, low_open=True)

    def per_feature(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((n,), self.low), torch.full((n,), self.high - self.low)

    @staticmethod
    def draw(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # torch.rand returns exactly 0 with probability 2^-24; with low = 0 that would be a firing
        # feature with coefficient 0, breaking "codes are strictly positive where a feature fires".
        return a + b * torch.rand(a.shape, generator=generator).clamp_(min=2.0**-24)


@dataclass(frozen=True)
class ConstantMagnitude(Config):
    """Every firing has coefficient ``value``."""

    value: float = 1.0

    def __post_init__(self) -> None:
        check_real("ConstantMagnitude.value", self.value, 0.0, low_open=True)

    def per_feature(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((n,), self.value), torch.zeros(n)

    @staticmethod
    def draw(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return a.clone()


@dataclass(frozen=True)
class FoldedNormal(Config):
    """Coefficient ``|N(mean_i, std_i²)|``.

    ``mean_i`` runs linearly from ``mean_start`` (feature 0) to ``mean_end``; ``std_i`` is drawn once
    per feature as ``|N(std, std_spread²)|`` (``std_spread=0`` gives every feature the same std).
    SynthSAEBench uses means 5 → 4 and per-feature stds ``|N(0.5, 0.5²)|``.
    """

    mean_start: float = 1.0
    mean_end: float = 1.0
    std: float = 0.0
    std_spread: float = 0.0

    def __post_init__(self) -> None:
        check_real("FoldedNormal.mean_start", self.mean_start, 0.0)
        check_real("FoldedNormal.mean_end", self.mean_end, 0.0)
        check_real("FoldedNormal.std", self.std, 0.0)
        check_real("FoldedNormal.std_spread", self.std_spread, 0.0)

    def per_feature(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.linspace(self.mean_start, self.mean_end, n) if n > 1 else torch.tensor([self.mean_start])
        std = (self.std + self.std_spread * torch.randn(n, generator=generator)).abs()
        return mean, std

    @staticmethod
    def draw(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return (a + b * torch.randn(a.shape, generator=generator)).abs()


Magnitude = Uniform | ConstantMagnitude | FoldedNormal
