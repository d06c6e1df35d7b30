"""Seeds for named random streams, so that each part of a computation owns its randomness."""

from __future__ import annotations

import zlib

import numpy as np


def child_seed(seed: int, name: str) -> int:
    """A seed for one named random stream derived from ``seed`` (stable across processes and Python
    versions: the name is hashed with CRC-32, not Python's salted ``hash``)."""
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


__all__ = ["child_seed"]
