"""Held-out splits for scoring on token sequences: whole sequences are held out, never single
positions, since positions of one sequence share its prefix."""

from __future__ import annotations

import torch

from groundtruth.checks import check_real


def sequence_split(n_sequences: int, test_fraction: float, generator: torch.Generator) -> torch.Tensor:
    """A boolean ``[n_sequences]`` mask of held-out sequences: whole sequences, never single positions."""
    check_real("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    test = torch.zeros(n_sequences, dtype=torch.bool)
    test[torch.randperm(n_sequences, generator=generator)[: max(1, round(test_fraction * n_sequences))]] = True
    return test


__all__ = ["sequence_split"]
