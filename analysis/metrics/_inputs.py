"""Input checks and dictionary geometry shared by the recovery and hierarchy metrics (:mod:`.recovery`,
:mod:`.hierarchy`): one place for the argument errors and the cosine conventions both follow."""

from __future__ import annotations

from typing import Any

import torch

from groundtruth.checks import check_tensor

# Rows per chunk are chosen so a chunk holds ~4M entries (4 MB as a bool mask; index lists of
# its non-zeros stay well under 100 MB even for dense codes).
_CHUNK_ELEMENTS = 1 << 22


def _check_nonempty_rows(name: str, t: torch.Tensor) -> None:
    if t.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row, got shape {tuple(t.shape)}")


def _check_dicts(true_dirs: Any, W_dec: Any) -> tuple[torch.Tensor, torch.Tensor]:
    true_dirs = check_tensor("true_dirs", true_dirs, 2)
    W_dec = check_tensor("W_dec", W_dec, 2)
    _check_nonempty_rows("true_dirs", true_dirs)
    _check_nonempty_rows("W_dec", W_dec)
    if true_dirs.shape[1] != W_dec.shape[1]:
        raise ValueError(
            f"true_dirs has shape {tuple(true_dirs.shape)} ([F, d]) but W_dec has shape "
            f"{tuple(W_dec.shape)} ([m, d]); the last dimensions (d) must match"
        )
    return true_dirs.detach(), W_dec.detach()


def _check_codes(
    codes: Any, true_codes: Any, true_dirs: torch.Tensor, W_dec: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    codes = check_tensor("codes", codes, 2)
    true_codes = check_tensor("true_codes", true_codes, 2)
    if codes.shape[0] != true_codes.shape[0]:
        raise ValueError(
            f"codes has shape {tuple(codes.shape)} but true_codes has shape "
            f"{tuple(true_codes.shape)}; the number of samples (dim 0) must match"
        )
    if codes.shape[1] != W_dec.shape[0]:
        raise ValueError(
            f"codes has shape {tuple(codes.shape)} ([n, m]) but W_dec has shape "
            f"{tuple(W_dec.shape)} ([m, d]); m must match"
        )
    if true_codes.shape[1] != true_dirs.shape[0]:
        raise ValueError(
            f"true_codes has shape {tuple(true_codes.shape)} ([n, F]) but true_dirs has shape "
            f"{tuple(true_dirs.shape)} ([F, d]); F must match"
        )
    return codes.detach(), true_codes.detach()


def _check_parent(parent: Any, n_features: int) -> torch.Tensor:
    parent = check_tensor("parent", parent, 1)
    if parent.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"parent must be an integer tensor (int64), got dtype {parent.dtype}")
    if parent.shape[0] != n_features:
        raise ValueError(f"parent has shape {tuple(parent.shape)} but there are {n_features} true features")
    parent = parent.to(torch.int64)
    bad = (parent < -1) | (parent >= n_features)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"parent[{i}] = {int(parent[i])} is not -1 (root) or a feature index in [0, {n_features})")
    self_loop = parent == torch.arange(n_features, device=parent.device)
    if bool(self_loop.any()):
        i = int(self_loop.nonzero()[0, 0])
        raise ValueError(f"parent[{i}] = {i}: a feature cannot be its own parent")
    return parent


def _chunk_rows(width: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        return chunk_size
    return max(1, _CHUNK_ELEMENTS // max(width, 1))


def _float(t: torch.Tensor) -> torch.Tensor:
    """Promote to at least float32 (keep float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32)) if t.dtype != torch.float64 else t


def _unit_rows(t: torch.Tensor) -> torch.Tensor:
    t = _float(t)
    norm = t.norm(dim=-1, keepdim=True)
    return t / norm.clamp_min(torch.finfo(t.dtype).tiny)  # zero rows stay exactly zero


def _cos(true_dirs: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    dtype = torch.promote_types(_float(true_dirs).dtype, _float(W_dec).dtype)
    a = _unit_rows(true_dirs.to(device=W_dec.device, dtype=dtype))
    b = _unit_rows(W_dec.to(dtype))
    return a @ b.T


def _latent_match(cos: torch.Tensor) -> torch.Tensor:
    """Best-matching true feature of each latent, by |cos| (SAELens convention): [m]."""
    return cos.abs().argmax(dim=0)


def _acc_dtype(device: torch.device) -> torch.dtype:
    """The dtype sums over many rows accumulate in: float64, except on MPS, which has none."""
    return torch.float32 if device.type == "mps" else torch.float64
