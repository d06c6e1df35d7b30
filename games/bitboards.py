"""Bitboard helpers shared by the Othello and chess engines: square ``i`` is bit ``i`` of a ``uint64``."""

from __future__ import annotations

import numpy as np

FULL = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


def to_squares(bits: np.ndarray) -> np.ndarray:
    """``[..., 64]`` booleans from ``[...]`` bitboards (square i is bit i)."""
    as_bytes = bits.astype("<u8").view(np.uint8).reshape(*bits.shape, 8)
    return np.unpackbits(as_bytes, axis=-1, bitorder="little").view(bool)  # 0/1 bytes are valid bools


def from_squares(squares: np.ndarray) -> np.ndarray:
    """``[...]`` bitboards from ``[..., 64]`` booleans; the inverse of :func:`to_squares`."""
    packed = np.packbits(squares, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8")[..., 0].astype(np.uint64)


def popcount(bits: np.ndarray) -> np.ndarray:
    """Number of set bits per bitboard."""
    return np.bitwise_count(bits).astype(np.int64)


def bit(square: np.ndarray) -> np.ndarray:
    """Bitboards with only ``square`` set."""
    return np.left_shift(np.uint64(1), np.asarray(square).astype(np.uint64))
