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
from toymodels.sae.registry import register_sae


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


@register_sae
class JumpReLUSAE(SparseAutoencoder):
    """JumpReLU activation and L0 penalty (``sparsity_coefficient`` is λ).

    The decoder is free by default, as in Rajamanoharan et al. and SAELens: the L0 count does not
    change when a row's norm does, so no constraint is needed, and unit rows trained worse side by
    side with SAELens (README). ``decoder_norm="unit"`` keeps the constraint.

    The threshold is a parameter in its own right (kept >= 1e-6 after each step) rather than
    ``exp(log θ)``, so that saving and loading it is exact. Adam moves it by about ``lr`` per step,
    so where it starts decides whether a short run sparsifies at all: ``jump_init_threshold=None``
    (the default) starts every latent at the pre-activation value that the top
    :attr:`init_density` of the first training batch's (sample, latent) pairs exceed, whatever the
    scale of the data; a number starts it there instead (SAELens's ``jumprelu_init_threshold``).
    """

    architecture = "jumprelu"
    paper = "Rajamanoharan et al. 2024b (STE, L0 penalty)"
    sparsity_knob = "sparsity_coefficient"  # the L0 coefficient λ
    knob_raises_l0 = False
    sparsity = "threshold"
    decoder_policies = ("free", "unit")
    saved_as = "jumprelu"
    saved_tensors = {**SparseAutoencoder.saved_tensors, "threshold": "threshold"}
    # the suite's unit-scale data: a wide pseudo-derivative and a start that sparsifies within its short runs
    suite_defaults = {"sparsity_coefficient": 0.1, "jump_init_threshold": 0.3, "jump_bandwidth": 1.0}
    init_density = 0.05  # starting L0 = 5% of d_sae: sparse enough to train, dense enough to keep latents alive

    def __init__(self, cfg):
        super().__init__(cfg)
        start = 0.0 if cfg.jump_init_threshold is None else cfg.jump_init_threshold
        self.threshold = nn.Parameter(torch.full((cfg.d_sae,), start))
        self.register_buffer("threshold_set", torch.tensor(cfg.jump_init_threshold is not None))

    @staticmethod
    def initial_threshold(pre_activations: torch.Tensor, density: float) -> float:
        """The value that a fraction ``density`` of the entries of ``pre_activations`` exceed."""
        flat = pre_activations.detach().flatten().float()
        count = max(1, int(density * flat.numel()))
        return float(flat.topk(count, sorted=False).values.min())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pre_activations(x)
        return torch.relu(z) * (z > self.threshold)  # the ReLU matters only for thresholds <= 0

    def training_loss(self, x: torch.Tensor, progress: float) -> LossTerms:
        z = self.pre_activations(x)
        if not bool(self.threshold_set):
            with torch.no_grad():
                self.threshold.fill_(max(1e-6, self.initial_threshold(z, self.init_density)))
                self.threshold_set.fill_(True)
        threshold = self.threshold
        codes = _JumpReLU.apply(z, threshold, self.cfg.jump_bandwidth)
        x_hat = self.decode(codes)
        mse = mse_loss(x, x_hat)
        l0 = _Step.apply(z, threshold, self.cfg.jump_bandwidth).sum(-1).mean()
        total = mse + self.sparsity_coefficient() * min(1.0, progress / 0.05) * l0
        return LossTerms(total, mse, codes.detach(), {"l0": float(l0.detach())}, x_hat, mse)

    @torch.no_grad()
    def after_optimizer_step(self, x: torch.Tensor, codes: torch.Tensor, optimizer, step: int) -> None:
        super().after_optimizer_step(x, codes, optimizer, step)
        self.threshold.clamp_(min=1e-6)

    # Per step with the batch's L0 below target, every threshold is multiplied by (L0 / target) ** this.
    # At 0.02 the thresholds lagged the reconstruction's push on the 64-feature model (L0 7.3-7.4 for 8).
    threshold_control_rate = 0.1
    # Its data-relative start puts L0 near the target from the first step: no annealed goal (measured with none).
    l0_anneal_fraction = 0.0

    @torch.no_grad()
    def steer_l0(self, codes: torch.Tensor) -> None:
        """Steer the L0 coefficient (as every penalty SAE does) and, while the batch's L0 is below
        target, scale every threshold down.

        The coefficient alone cannot raise L0: the L0 penalty's gradient only pushes thresholds up, and
        the reconstruction term settles at its own L0 (on ``synthsaebench-small`` at width 512, about 9
        for any coefficient from 0.02 to 3, and near 9 as it goes to 0; SAELens's JumpReLU the same), so a
        coefficient-only controller cannot reach a target above that. Scaling the thresholds acts on L0
        directly; it is applied only below target so that sparsifying is still the penalty's work (scaling
        both ways cost 0.05 F1 at target 8 there, seed 0). This rule is our own; the coefficient controller is
        SynthSAEBench's autotuner idea (see :meth:`SparseAutoencoder.steer_l0`), and Gemma Scope's JumpReLU
        recipe has no counterpart (it fixes λ).
        """
        super().steer_l0(codes)
        ratio = self.l0_ratio(codes)
        if ratio < 1.0:
            self.threshold *= ratio**self.threshold_control_rate

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A state dict from before the flag existed always held a threshold that was given.
        state_dict.setdefault(prefix + "threshold_set", torch.tensor(True))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def import_state(self, weights: dict[str, torch.Tensor]) -> None:
        super().import_state(weights)
        self.threshold_set.fill_(True)  # a loaded threshold is never re-initialised by training
