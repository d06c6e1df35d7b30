"""The Matching Pursuit SAE (Costa et al. 2025, "From Flat to Hierarchical: Extracting Sparse Representations
with Matching Pursuit", arXiv:2506.03093).

Its encoder is not a layer but a greedy algorithm over the decoder's rows (Mallat & Zhang 1993): starting from
the centred input ``x - b_dec`` as the residual, each step picks the row most correlated with the residual,
adds that correlation (ReLU'd) to the row's code and subtracts its contribution from the residual. The
encoder is tied to the decoder, so there is no ``W_enc`` or ``b_enc``. Because every step conditions on what
earlier steps explained, later latents can encode what is left of a feature after its parent, which is why the
paper argues MP suits hierarchical and correlated features that a one-shot encoder cannot separate.

A sample's pursuit stops (SAELens's ``MatchingPursuitSAE``, whose rules these are) after ``k`` steps (SAELens's
``max_iterations``), or when a step adds no new latent (it picks a latent already active, whose code still
grows by the step's value, or finds no positive correlation), or, with ``residual_threshold`` > 0, once the
residual norm is below it. So L0 is at most ``k``; it is lower where the pursuit stops early.

Rows are kept at unit norm (the only decoder policy): a step then removes the residual's component along the
chosen row, so the residual never grows, which is what makes the greedy choice meaningful. Training is plain
reconstruction loss, with gradients through the codes and every residual update (the choices are constants).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toymodels.sae.base import LossTerms, SparseAutoencoder
from toymodels.sae.config import SAEConfig
from toymodels.sae.registry import register_sae


def matching_pursuit(
    x: torch.Tensor, atoms: torch.Tensor, steps: int, residual_threshold: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``[n, d_sae]`` and final residuals ``[n, d_in]`` of matching pursuit of the rows of ``x [n, d_in]``
    over the rows of ``atoms [d_sae, d_in]``, with the stopping rules of the module docstring.

    Vectorised over samples; the loop runs over the at most ``steps`` greedy steps. Differentiable in ``x`` and
    ``atoms`` (the chosen indices are constants).
    """
    n = x.shape[0]
    residual = x
    active = torch.ones(n, dtype=torch.bool, device=x.device)  # samples whose pursuit goes on
    support = torch.zeros(n, atoms.shape[0], dtype=torch.bool, device=x.device)
    rows = torch.arange(n, device=x.device)
    chosen, values = [], []
    for _ in range(steps):
        with torch.no_grad():
            choice = (residual @ atoms.T).argmax(-1)
        atom = atoms[choice]
        value = F.relu((residual * atom).sum(-1)) * active.to(x.dtype)
        residual = residual - value[:, None] * atom
        chosen.append(choice)
        values.append(value)
        with torch.no_grad():
            active &= (value > 0) & ~support[rows, choice]  # a step that adds no new latent ends the pursuit
            support[rows, choice] |= value > 0
            if residual_threshold > 0:
                active &= residual.norm(dim=-1) >= residual_threshold
            if not bool(active.any()):
                break
    codes = x.new_zeros(n, atoms.shape[0])
    if chosen:
        codes = codes.scatter_add(1, torch.stack(chosen, 1), torch.stack(values, 1))
    return codes, residual


@register_sae
class MatchingPursuitSAE(SparseAutoencoder):
    """Matching pursuit over a tied, unit-norm dictionary (Costa et al. 2025); ``k`` greedy steps at most."""

    architecture = "matching_pursuit"
    paper = "Costa et al. 2025 (greedy residual pursuit over a tied unit-norm dictionary)"
    sparsity_knob = "k"
    knob_raises_l0 = True
    sparsity = "pursuit"
    decoder_policies = ("unit",)
    saved_as = "matching_pursuit"
    suite_defaults = {"k": 4}
    saved_tensors = {"W_dec": "W_dec", "b_dec": "b_dec"}  # tied: SAELens saves no encoder

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        del self.W_enc, self.b_enc  # the encoder is the pursuit over W_dec

    def pursue(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes and final residuals of ``x [..., d_in]``, with the leading dimensions kept."""
        lead = x.shape[:-1]
        codes, residual = matching_pursuit(
            (x - self.b_dec).reshape(-1, x.shape[-1]), self.W_dec, self.cfg.k, self.cfg.residual_threshold
        )
        return codes.reshape(*lead, -1), residual.reshape(x.shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.pursue(x)[0]

    def training_loss(self, x: torch.Tensor, progress: float) -> LossTerms:
        codes, residual = self.pursue(x)
        mse = residual.pow(2).sum(-1).mean()  # x - decode(codes) is the pursuit's final residual
        return LossTerms(mse, mse.detach(), codes.detach(), x_hat=x - residual, reconstruction=mse)

    def saelens_fields(self) -> dict:
        return {"max_iterations": self.cfg.k, "residual_threshold": self.cfg.residual_threshold,
                "stop_on_duplicate_support": True}  # fmt: skip

    @classmethod
    def config_strategies(cls, st, d_sae: int) -> dict:
        return {"residual_threshold": st.just(0.0) | st.floats(1e-3, 2.0)}
