"""Run independent pieces of a batch on torch's threads."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, threads, pool)


def _executor(threads: int) -> ThreadPoolExecutor:
    """One pool per process and thread count, kept between calls. Its workers run torch ops on one
    intra-op thread each (a per-thread setting): nested intra-op pools on the same cores spin-wait
    against each other and cost more than a third of the throughput."""
    global _pool
    if _pool is None or _pool[:2] != (os.getpid(), threads):
        if _pool is not None and _pool[0] == os.getpid():
            _pool[2].shutdown(wait=False)
        pool = ThreadPoolExecutor(
            threads, thread_name_prefix="groundtruth", initializer=torch.set_num_threads, initargs=(1,)
        )
        _pool = (os.getpid(), threads, pool)
    return _pool[2]


def map_threads(fn: Callable, *iterables: Iterable) -> list:
    """``list(map(fn, *iterables))`` on ``torch.get_num_threads()`` threads.

    torch and NumPy release the GIL inside their kernels, so pieces of a batch run in parallel.
    Each piece must own its randomness (pre-drawn, or its own seeded generator) so that the
    result does not depend on the number of threads.
    """
    items = [tuple(args) for args in zip(*iterables, strict=True)]
    threads = torch.get_num_threads()
    if threads <= 1 or len(items) <= 1:
        return [fn(*args) for args in items]
    return list(_executor(threads).map(lambda args: fn(*args), items))


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block on ``threads`` torch intra-op threads, then restore the count. Parallel reductions
    sum in an order that depends on the thread count; a fixed count makes their bits reproducible."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
