"""Jobs for the prefetch tests' worker processes, in a module that imports little: each worker imports it
to unpickle its job, and importing the test module (Hypothesis, pytest) would cost seconds per worker."""

import time

import torch


def slow_square(k: int) -> torch.Tensor:
    """Early keys take longest, so workers finish them out of order."""
    time.sleep(0.05 * (5 - k % 6))
    return torch.tensor([k * k])


def fail_on_three(k: int) -> torch.Tensor:
    if k == 3:
        raise ValueError(f"cannot compute key {k}")
    return torch.tensor([k])


class _Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("not picklable")


def fail_unpicklably(k: int) -> torch.Tensor:
    raise _Unpicklable("holds a lock")


def mixed(k: int) -> dict:
    """Tensors of several dtypes, shapes and layouts inside nested containers, next to plain objects."""
    g = torch.Generator().manual_seed(k)
    grid = torch.randn(5, 3, generator=g)
    return {
        "key": k,
        "floats": (grid.t(), grid.half(), grid.double()[::2]),  # non-contiguous, half, strided rows
        "ints": [torch.arange(k, k + 7), torch.tensor(k)],  # and a 0-d tensor
        "mask": grid > 0,
        "empty": torch.empty(0, 4),
        "sparse": torch.eye(3).to_sparse(),  # not strided: pickled the ordinary way
    }


def growing(k: int) -> torch.Tensor:
    """Each batch larger than the last, so slots must be replaced."""
    return torch.arange(1000 * (k + 1), dtype=torch.float64)
