"""Gated SAE: separate "which latents fire" from "how strongly".

Rajamanoharan et al. (2024), "Improving Dictionary Learning with Gated Sparse Autoencoders". A gate
``π_gate = (x - b_dec) W_enc + b_gate`` decides which latents are on; magnitudes come from the same
encoder rescaled per latent, ``π_mag = (x - b_dec) (W_enc ⊙ exp(r_mag)) + b_mag``. The L1 penalty
falls on ``ReLU(π_gate)`` weighted by decoder norms, and an auxiliary loss asks ``ReLU(π_gate)`` to
reconstruct ``x`` through a frozen copy of the decoder, which trains the gate despite the step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from toymodels.sae.base import LossTerms, SparseAutoencoder, mse_loss
from toymodels.sae.registry import register_sae
from toymodels.sae.relu import warmup


@register_sae
class GatedSAE(SparseAutoencoder):
    """Gated SAE; ``b_enc`` plays the gate bias ``b_gate`` (saved under that name)."""

    architecture = "gated"
    paper = "Rajamanoharan et al. 2024a"
    sparsity_knob = "sparsity_coefficient"  # the L1 coefficient on the gate
    knob_raises_l0 = False
    sparsity = "penalty"
    # Unit rows only: with free rows (the penalty is norm-weighted, the auxiliary loss sees a frozen
    # decoder) the rows shrank under the penalty while the magnitude path grew, and at width 1,024 the
    # SAE reconstructed nothing (FVE 0.0 at L0 14, benchmarks/training_parity.py); unit rows reached
    # MCC 0.71 on the same batches.
    decoder_policies = ("unit",)
    saved_as = "gated"
    suite_defaults = {"sparsity_coefficient": 2.0}
    saved_tensors = {
        "W_enc": "W_enc",
        "b_gate": "b_enc",
        "r_mag": "r_mag",
        "b_mag": "b_mag",
        "W_dec": "W_dec",
        "b_dec": "b_dec",
    }

    def __init__(self, cfg):
        super().__init__(cfg)
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae))

    def _paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centred = x - self.b_dec
        gate = centred @ self.W_enc + self.b_enc
        mag = centred @ (self.W_enc * self.r_mag.exp()) + self.b_mag
        return gate, mag

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        gate, mag = self._paths(x)
        return (gate > 0).to(mag.dtype) * F.relu(mag)

    def training_loss(self, x: torch.Tensor, progress: float) -> LossTerms:
        gate, mag = self._paths(x)
        codes = (gate > 0).to(mag.dtype) * F.relu(mag)
        x_hat = self.decode(codes)
        mse = mse_loss(x, x_hat)
        gate_acts = F.relu(gate)
        penalty = (gate_acts * self.W_dec.norm(dim=1)).sum(-1).mean()
        aux = mse_loss(x, gate_acts @ self.W_dec.detach() + self.b_dec.detach())
        total = mse + self.sparsity_coefficient() * warmup(progress) * penalty + aux
        parts = {"sparsity": float(penalty.detach()), "aux": float(aux.detach())}
        # The auxiliary loss stays under an end-to-end objective: it is what trains the gate past its step.
        return LossTerms(total, mse, codes.detach(), parts, x_hat, mse)
