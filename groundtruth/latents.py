"""Containers for data whose latent structure is known exactly.

An activation source yields :class:`ActivationBatch` objects: activations ``x [n, d]`` together with
the sparse code that produced them and the true feature directions ``[F, d]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SparseCodes:
    """A sparse ``[n, F]`` matrix of feature coefficients in coordinate form.

    ``rows`` is sorted; within a row ``cols`` is sorted. Entries are strictly positive for features
    that fired. Kept sparse because dense codes for 16k features are most of a batch's memory.
    """

    rows: torch.Tensor  # [nnz] int64
    cols: torch.Tensor  # [nnz] int64
    values: torch.Tensor  # [nnz] float32
    shape: tuple[int, int]

    def to_dense(self) -> torch.Tensor:
        """The ``[n, F]`` float32 code matrix."""
        dense = torch.zeros(self.shape, dtype=self.values.dtype, device=self.values.device)
        dense[self.rows, self.cols] = self.values
        return dense

    def active(self) -> torch.Tensor:
        """The ``[n, F]`` boolean matrix of features that fired."""
        mask = torch.zeros(self.shape, dtype=torch.bool, device=self.values.device)
        mask[self.rows, self.cols] = True
        return mask

    def l0(self) -> float:
        """Mean number of active features per sample."""
        return self.rows.numel() / max(self.shape[0], 1)


@dataclass(frozen=True)
class ActivationBatch:
    """Activations with their ground truth: ``x = codes @ directions + bias (+ noise)``."""

    x: torch.Tensor  # [n, d] float32
    codes: SparseCodes  # [n, F]
    directions: torch.Tensor  # [F, d] float32, unit rows unless the source says otherwise

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class TokenBatch:
    """Token sequences with per-token ground truth: ``tokens [b, t]`` int64 and ``latents [b, t, K]``
    whose last axis is named by ``names`` (e.g. ``belief[0]``, ``mine@D3``). ``kind`` says whether the
    latents are ``"binary"`` labels or ``"continuous"`` values."""

    tokens: torch.Tensor
    latents: torch.Tensor
    names: tuple[str, ...]
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in ("binary", "continuous"):
            raise ValueError(f"kind must be 'binary' or 'continuous', got {self.kind!r}")
        if self.latents.shape[:2] != self.tokens.shape or self.latents.shape[2] != len(self.names):
            raise ValueError(
                f"latents {tuple(self.latents.shape)} do not match tokens {tuple(self.tokens.shape)} "
                f"and {len(self.names)} names"
            )

    def __len__(self) -> int:
        return self.tokens.shape[0]
