"""Run independent pieces of a batch on torch's threads."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import torch


def map_threads(fn: Callable, *iterables: Iterable) -> list:
    """``list(map(fn, *iterables))`` on ``torch.get_num_threads()`` threads.

    torch and NumPy release the GIL inside their kernels, so pieces of a batch run in parallel.
    Each piece must own its randomness (pre-drawn, or its own seeded generator) so that the
    result does not depend on the number of threads.
    """
    items = [tuple(args) for args in zip(*iterables, strict=True)]
    threads = min(torch.get_num_threads(), len(items))
    if threads <= 1:
        return [fn(*args) for args in items]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda args: fn(*args), items))
