"""Stand-ins shared by tests in several folders (tests/ is on the path through tests/conftest.py)."""

import torch


class Affine:
    """A stand-in SAE whose reconstruction is ``scale * x + shift`` (identity at 1, 0; zeros at 0, 0)."""

    def __init__(self, scale: float, shift: float = 0.0) -> None:
        self.scale, self.shift = scale, shift

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes + self.shift
