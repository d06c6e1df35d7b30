"""JumpReLU SAE trained with straight-through estimators and an L0 penalty.

Rajamanoharan et al. (2024), "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU Sparse
Autoencoders". The code is ``z * H(z - θ)`` with a learned per-latent threshold ``θ``.
The Heaviside step has no useful gradient, so both the activation and the L0 count use the paper's
pseudo-derivatives with a rectangle kernel of width ``jump_bandwidth`` (ε):

    d/dθ JumpReLU(z) = -(θ/ε) K((z - θ)/ε),      d/dθ H(z - θ) = -(1/ε) K((z - θ)/ε),

with ``K(u) = 1[|u| < 1/2]``; gradients with respect to ``z`` are the ordinary ones.
"""

from __future__ import annotations

import torch
from torch import nn

from toymodels.sae.base import LossTerms, SparseAutoencoder, mse_loss


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    return (u.abs() < 0.5).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return z * (z > threshold)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = grad * (z > threshold)
        grad_t = (-(threshold / eps) * _rectangle((z - threshold) / eps) * grad).sum(0)
        return grad_z, grad_t, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_t = (-(1.0 / eps) * _rectangle((z - threshold) / eps) * grad).sum(0)
        return torch.zeros_like(z), grad_t, None


class JumpReLUSAE(SparseAutoencoder):
    """JumpReLU activation, L0 penalty (``sparsity_coefficient`` is λ), unit-norm decoder.

    The threshold is a parameter in its own right (kept >= 1e-6 after each step) rather than
    ``exp(log θ)``, so that saving and loading it is exact.
    """

    architecture = "jumprelu"
    saved_as = "jumprelu"
    saved_tensors = {**SparseAutoencoder.saved_tensors, "threshold": "threshold"}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.threshold = nn.Parameter(torch.full((cfg.d_sae,), cfg.jump_init_threshold))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pre_activations(x)
        return torch.relu(z) * (z > self.threshold)  # the ReLU matters only for thresholds <= 0

    def training_loss(self, x: torch.Tensor, progress: float) -> LossTerms:
        z = self.pre_activations(x)
        threshold = self.threshold
        codes = _JumpReLU.apply(z, threshold, self.cfg.jump_bandwidth)
        mse = mse_loss(x, self.decode(codes))
        l0 = _Step.apply(z, threshold, self.cfg.jump_bandwidth).sum(-1).mean()
        total = mse + self.cfg.sparsity_coefficient * min(1.0, progress / 0.05) * l0
        return LossTerms(total, mse, codes.detach(), {"l0": float(l0.detach())})

    @torch.no_grad()
    def after_optimizer_step(self, x: torch.Tensor, codes: torch.Tensor, optimizer, step: int) -> None:
        super().after_optimizer_step(x, codes, optimizer, step)
        self.threshold.clamp_(min=1e-6)
