"""Argument checks that fail early with the argument's name and the offending value."""

from __future__ import annotations

import math
import numbers

import torch


class FolderConflict(ValueError):
    """An output folder holds results made with other settings. The caller chose the folder, so a command
    line reports this as an argument error (choose another folder) rather than a bug."""


def check_int(name: str, value: object, minimum: int = 1, maximum: int | None = None) -> int:
    """Check an integer (not a bool) in ``[minimum, maximum]``: ``TypeError`` for another type,
    ``ValueError`` for a value out of range, each naming the argument and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def check_real(
    name: str,
    value: object,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check a real number (not a bool) inside an interval: ``TypeError`` for another type,
    ``ValueError`` for NaN or a value outside, each naming the argument and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    if math.isnan(value):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must lie in {lo}{low}, {high}{hi}, got {value!r}")
    return float(value)


_CHUNK_ELEMENTS = 1 << 22  # elements per block of the finiteness check


def check_tensor(
    name: str,
    value: object,
    ndim: int | None = None,
    shape: tuple[int | None, ...] | None = None,
    *,
    finite: bool = True,
) -> torch.Tensor:
    """Check a tensor of the given rank or shape (``None`` in ``shape``: any size) and, with ``finite``,
    without NaN or inf: ``TypeError`` for a non-tensor, ``ValueError`` naming the first bad entry.

    The finiteness check runs over blocks of rows, so it never allocates a mask the size of a huge
    tensor; a block whose sum is finite needs no element-wise check."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(value.shape)}")
    if shape is not None and (
        value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape, strict=True))
    ):
        raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    if finite and (value.is_floating_point() or value.is_complex()) and value.numel():
        rows = value.reshape(1) if value.ndim == 0 else value
        step = max(1, _CHUNK_ELEMENTS // max(1, rows[0].numel()))
        for i in range(0, rows.shape[0], step):
            block = rows[i : i + step].detach()
            if bool(torch.isfinite(block.sum(dtype=torch.promote_types(block.dtype, torch.float32)))):
                continue
            bad = ~torch.isfinite(block)
            if bool(bad.any()):
                first = bad.nonzero()[0].tolist()
                first[0] += i
                where = tuple(int(k) for k in first)[: value.ndim]
                raise ValueError(
                    f"{name} contains a non-finite value (NaN or inf): {name}{list(where)} = {value[where].item()}"
                )
    return value
