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


def structured(k: int) -> dict:
    return {"x": torch.full((2,), float(k)), "pair": (torch.tensor([k]), torch.tensor([-k]))}
