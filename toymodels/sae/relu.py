"""ReLU SAEs with an L1-type penalty: the standard SAE and p-annealing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from groundtruth.seeding import child_seed
from toymodels.sae.base import LossTerms, SparseAutoencoder, mse_loss
from toymodels.sae.registry import register_sae


def warmup(progress: float, fraction: float = 0.05) -> float:
    """Linear warm-up of the sparsity coefficient over the first ``fraction`` of training."""
    return min(1.0, progress / fraction) if fraction > 0 else 1.0


@register_sae
class StandardSAE(SparseAutoencoder):
    """ReLU SAE with an L1 penalty.

    With ``decoder_norm="free"`` (the default, SAELens's recipe): the L1 term is ``sum_i c_i ‖W_dec[i]‖``
    (Conerly et al. 2024, "Circuits Updates – April 2024"), so no constraint is needed; side by side
    with unit rows at matched L0 its F1 was 0.03–0.07 higher, equal to SAELens's (README). With
    ``decoder_norm="unit"``: decoder rows fixed at norm 1 and dead latents resampled from poorly
    reconstructed inputs every ``resample_every`` steps, up to step ``resample_until`` (Bricken et
    al. 2023, "Towards Monosemanticity").
    """

    architecture = "standard"
    paper = "Conerly et al. 2024 (free decoder, norm-weighted L1); Bricken et al. 2023 (unit rows + resampling)"
    sparsity_knob = "sparsity_coefficient"  # the L1 coefficient
    knob_raises_l0 = False
    sparsity = "penalty"
    decoder_policies = ("free", "unit")
    saved_as = "standard"
    suite_defaults = {"sparsity_coefficient": 0.05}
    resamples_dead = True

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pre_activations(x))

    def penalty(self, codes: torch.Tensor, progress: float) -> torch.Tensor:
        if self.decoder_norm == "free":  # sum over the batch first: no [n, d_sae] product
            return codes.sum(0) @ self.W_dec.norm(dim=1) / codes.shape[0]
        return codes.sum(-1).mean()  # codes are non-negative: this is the L1 norm

    def training_loss(self, x: torch.Tensor, progress: float) -> LossTerms:
        codes = self.encode(x)
        x_hat = self.decode(codes)
        mse = mse_loss(x, x_hat)
        penalty = self.penalty(codes, progress)
        total = mse + self.sparsity_coefficient() * warmup(progress) * penalty
        return LossTerms(total, mse, codes.detach(), {"sparsity": float(penalty.detach())}, x_hat, mse)

    @torch.no_grad()
    def after_optimizer_step(self, x: torch.Tensor, codes: torch.Tensor, optimizer, step: int) -> None:
        super().after_optimizer_step(x, codes, optimizer, step)
        every, until = self.cfg.resample_every, self.cfg.resample_until
        if every and self.decoder_norm == "unit" and step % every == 0 and (not until or step <= until):
            self.resample_dead(x, optimizer, step)

    @torch.no_grad()
    def resample_dead(self, x: torch.Tensor, optimizer, step: int) -> int:
        """Re-initialise dead latents towards inputs the SAE reconstructs worst (Bricken et al. 2023).

        Inputs are drawn with probability proportional to their squared error; a dead latent's
        decoder row becomes the unit residual, its encoder column the same direction scaled to 0.2×
        the mean alive encoder norm, its bias 0, and its Adam moments are zeroed. Returns how many
        latents were resampled.
        """
        dead = torch.nonzero(self.dead_mask()).flatten()
        if dead.numel() == 0:
            return 0
        residual = x - self(x)
        err = residual.pow(2).sum(1)
        if float(err.sum()) <= 0:
            return 0
        g = torch.Generator(device=x.device).manual_seed(child_seed(self.cfg.seed, f"resample/{step}"))
        rows = torch.multinomial(err, dead.numel(), replacement=True, generator=g)
        direction = residual[rows] / residual[rows].norm(dim=1, keepdim=True).clamp(min=1e-12)
        alive = ~self.dead_mask()
        enc_norm = self.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
        self.W_dec[dead] = direction
        self.W_enc[:, dead] = direction.T * 0.2 * enc_norm
        self.b_enc[dead] = 0.0
        reset_adam(optimizer, self.W_dec, dead, dim=0)
        reset_adam(optimizer, self.W_enc, dead, dim=1)
        reset_adam(optimizer, self.b_enc, dead, dim=0)
        self.steps_since_fired[dead] = 0
        return int(dead.numel())


def reset_adam(optimizer, param: torch.Tensor, index: torch.Tensor, dim: int) -> None:
    """Zero Adam's moment estimates for the slices ``index`` of ``param`` along ``dim``."""
    state = optimizer.state.get(param, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key].index_fill_(dim, index, 0.0)


@register_sae
class PAnnealSAE(StandardSAE):
    """ReLU SAE whose penalty ``sum_i c_i^p`` anneals ``p`` linearly from 1 to ``p_end`` over training
    (Karvonen et al. 2024, "Measuring Progress in Dictionary Learning for Language Model
    Interpretability with Board Game Models"). Saved as a standard SAE: inference is plain ReLU."""

    architecture = "p_anneal"
    paper = "Karvonen et al. 2024 (L_p, p annealed from 1 to p_end)"
    decoder_policies = ("unit", "free")  # the paper's unit rows; not measured against the free policy
    saved_as = "standard"
    suite_defaults = {"sparsity_coefficient": 0.05}
    # As p falls the penalty on small codes grows, so the coefficient that holds a target L0 keeps falling
    # (tenfold over a 600-step run); the L0 controller learns that trend (SparseAutoencoder.steer_l0).
    # Karvonen et al.'s own trainer rescales the coefficient at each change of p by the ratio of the
    # penalties at the old and new p; measured here that closed only a quarter of the gap.
    l0_trend_rate = 1e-4
    # No annealed goal: the trend integrator learned the goal's descent as if it were the coefficient's and
    # overshot once the goal held (64-feature model, target 3: L0 2.56-2.63 over seeds 0-2 with a goal
    # annealed over 0.6 of training). Its early overshoot on synthsaebench-small is not solved.
    l0_anneal_fraction = 0.0

    def penalty(self, codes: torch.Tensor, progress: float) -> torch.Tensor:
        p = 1.0 + (self.cfg.p_end - 1.0) * min(max(progress, 0.0), 1.0)
        weighted = codes * self.W_dec.norm(dim=1) if self.decoder_norm == "free" else codes
        # c^p has an infinite slope at 0 for p < 1; a tiny offset keeps gradients finite.
        return ((weighted + 1e-6).pow(p) - 1e-6**p).sum(-1).mean()
