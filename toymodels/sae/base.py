"""The shared base of the SAE family: parameters in SAELens's layout, encode/decode, decoder-norm policy.

Every variant stores ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]`` and ``b_dec [d_in]``,
subtracts ``b_dec`` before encoding (SAELens's ``apply_b_dec_to_input``), and declares how it treats
decoder row norms:

- ``"unit"``: rows are renormalised to 1 after every optimiser step, and the gradient component
  along each row is removed first so Adam does not fight the constraint;
- ``"free"``: rows may take any norm (they start at 1, as SAELens's best setting, not its default 0.1);
  an L1-type penalty weights each code by its row's norm, so it cannot be dodged by shrinking codes
  and growing rows (an L0 count needs no weighting).

Each class lists the policies it supports in ``decoder_policies``, its default first; the defaults
are the policies that won side by side against SAELens (``benchmarks/training_parity.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from toymodels.sae.config import SAEConfig


@dataclass
class LossTerms:
    """The pieces of one training loss; ``total`` is what gets minimised.

    ``x_hat`` (the reconstruction, differentiable, as training computes it) and ``reconstruction`` (the
    differentiable local reconstruction term inside ``total``) let another objective swap that term for its
    own: ``total - reconstruction + ...`` is the architecture's sparsity (and auxiliary) terms plus the new
    one (end-to-end SAEs, :mod:`toymodels.e2e`). A user's SAE that leaves them None trains locally only.
    """

    total: torch.Tensor
    mse: torch.Tensor
    codes: torch.Tensor  # the batch's codes, detached, for firing statistics
    parts: dict[str, float] = field(default_factory=dict)
    x_hat: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None


class SparseAutoencoder(nn.Module):
    """Base class. Subclasses define :meth:`encode` and :meth:`training_loss`, declare what
    :data:`toymodels.sae.registry.DECLARATIONS` lists, and are passed to ``register_sae``."""

    architecture: ClassVar[str]
    paper: ClassVar[str]
    sparsity_knob: ClassVar[str]  # "k" or "sparsity_coefficient"
    knob_raises_l0: ClassVar[bool]
    sparsity: ClassVar[str]  # one of registry.SPARSITY_KINDS
    # Decoder-norm policies the architecture supports; the first is its default (measured, see README).
    decoder_policies: ClassVar[tuple[str, ...]]
    saved_as: ClassVar[str]  # SAELens architecture name written to cfg.json
    suite_defaults: ClassVar[dict]
    resamples_dead: ClassVar[bool] = False  # implements resample_every (Bricken et al.'s recipe)
    built_for: ClassVar[str] = "flat"  # the data it is built for, one of registry.DATA_KINDS
    decoder_norm: str

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        self.decoder_norm = cfg.decoder_norm
        g = torch.Generator().manual_seed(cfg.seed)
        # Uniform entries, rows scaled to unit norm (SAELens's Kaiming-uniform start): side by side at
        # width 1,024 it trained TopK to MCC +0.009, F1 +0.007 over Gaussian rows on each of three seeds.
        w_dec = torch.rand(cfg.d_sae, cfg.d_in, generator=g) * 2 - 1
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)  # unit rows under either policy
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.T.clone().contiguous())  # tied initialisation
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.register_buffer("steps_since_fired", torch.zeros(cfg.d_sae, dtype=torch.int64))
        self.training_progress = 0.0  # fraction of training done, set by the Trainer before each step
        if cfg.target_l0 is not None:  # the L0 controller's state, checkpointed with the weights
            self.register_buffer("coefficient", torch.tensor(float(cfg.sparsity_coefficient), dtype=torch.float64))
            # the first batch's L0, where the annealed target starts (0 until the first step)
            self.register_buffer("l0_start", torch.tensor(0.0, dtype=torch.float64))
            if self.l0_trend_rate:
                self.register_buffer("coefficient_trend", torch.tensor(1.0, dtype=torch.float64))

    # -- inference ---------------------------------------------------------------------------------
    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    # -- training ----------------------------------------------------------------------------------
    def training_loss(self, x: torch.Tensor, progress: float) -> LossTerms:
        """The loss on batch ``x``; ``progress`` in [0, 1] is the fraction of training done."""
        raise NotImplementedError

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Remove the gradient component along each decoder row (unit policy only)."""
        if self.decoder_norm == "unit" and self.W_dec.grad is not None:
            w = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
            self.W_dec.grad -= (self.W_dec.grad * w).sum(1, keepdim=True) * w

    @torch.no_grad()
    def after_optimizer_step(self, x: torch.Tensor, codes: torch.Tensor, optimizer, step: int) -> None:
        """Enforce the decoder-norm policy, track which latents fire, and steer L0 (with ``target_l0``)."""
        if self.decoder_norm == "unit":
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
        fired = (codes > 0).any(0)
        self.steps_since_fired += 1
        self.steps_since_fired[fired] = 0
        if self.cfg.target_l0 is not None:
            self.steer_l0(codes)

    # Per step, the coefficient is multiplied by (batch L0 / goal) ** rate (see steer_l0).
    l0_control_rate: ClassVar[float] = 0.02
    # A class whose penalty drifts by design (p-annealing) sets this > 0: the controller then also learns the
    # coefficient's trend, so it tracks a moving coefficient without lagging behind it (see steer_l0).
    l0_trend_rate: ClassVar[float] = 0.0
    # The fraction of training over which the steered-to L0 falls geometrically from the first batch's L0 to
    # the target (see steer_l0); 0 steers to the target from the first step.
    l0_anneal_fraction: ClassVar[float] = 0.6

    def sparsity_coefficient(self) -> float:
        """The coefficient of the sparsity term now: the config's, or the L0 controller's current value."""
        return self.cfg.sparsity_coefficient if self.cfg.target_l0 is None else float(self.coefficient)

    def l0_goal(self) -> float:
        """The L0 steered to now: from the first batch's L0 (when above target) down to ``cfg.target_l0``,
        geometrically over the first ``l0_anneal_fraction`` of training, then the target."""
        target, start = self.cfg.target_l0, float(self.l0_start)
        if start <= target or not self.l0_anneal_fraction:
            return target
        left = 1.0 - min(1.0, self.training_progress / self.l0_anneal_fraction)
        return target * (start / target) ** left

    def l0_ratio(self, codes: torch.Tensor) -> float:
        """The batch's L0 over the goal (:meth:`l0_goal`), each + 0.1 so that a batch with no active latent
        still moves the controller."""
        l0 = float((codes > 0).sum(-1).float().mean())
        return (l0 + 0.1) / (self.l0_goal() + 0.1)

    @torch.no_grad()
    def steer_l0(self, codes: torch.Tensor) -> None:
        """Move the coefficient towards the value that holds ``cfg.target_l0`` (a larger penalty, fewer
        active latents), from the L0 of the batch just trained on.

        Per step the coefficient is multiplied by (batch L0 / goal) ** ``l0_control_rate``: an integral
        controller in log space, SynthSAEBench's L0 autotuner's multiplicative update. Ours: the goal is
        annealed (:meth:`l0_goal`). A penalty SAE starts dense and its L0 responds to the coefficient only
        tens of steps later, so steering to the target from step 0 drove the coefficient to ~2x the
        calibrated value by step 50 on ``synthsaebench-small`` and cost MCC and F1 (0.607 / 0.496 at a fixed
        calibrated coefficient, 0.497 / 0.292 steered, 0.557 / 0.474 with the annealed goal; seed 0, target
        16, ``benchmarks/RESULTS.md``). Under a fixed calibrated coefficient L0 itself falls slowly to its
        final value (about 83% of the run there); the annealed goal asks for a similar descent.

        An integral controller lags a target that keeps moving: when the coefficient that holds the L0
        falls by a steady factor per step, the L0 settles short by that factor to the power 1 / rate
        (p-annealing's fell tenfold over 600 steps and its L0 stayed ~20% short of 8). With
        ``l0_trend_rate`` > 0 a second integrator, ``coefficient_trend``, learns that per-step factor and
        applies it too, which removes the steady error (a type-2 loop: our reasoning; measurements in
        ``benchmarks/RESULTS.md``).
        """
        if float(self.l0_start) == 0.0:
            self.l0_start.fill_(float((codes > 0).sum(-1).float().mean()))
        ratio = self.l0_ratio(codes)
        sign = -1.0 if self.knob_raises_l0 else 1.0
        if self.l0_trend_rate:
            self.coefficient_trend *= ratio ** (sign * self.l0_trend_rate)
            self.coefficient *= self.coefficient_trend
        self.coefficient *= ratio ** (sign * self.l0_control_rate)

    def dead_mask(self) -> torch.Tensor:
        return self.steps_since_fired >= self.cfg.dead_after

    def decoder_norms(self) -> torch.Tensor:
        return self.W_dec.norm(dim=1)

    # -- persistence ---------------------------------------------------------------------------------
    # Saved tensor name -> attribute holding it, in SAELens's naming for ``saved_as``.
    saved_tensors: ClassVar[dict[str, str]] = {"W_enc": "W_enc", "b_enc": "b_enc", "W_dec": "W_dec", "b_dec": "b_dec"}

    def export_state(self) -> dict[str, torch.Tensor]:
        """Weights under SAELens's names for the architecture this SAE is saved as."""
        return {name: getattr(self, attr).detach() for name, attr in self.saved_tensors.items()}

    @torch.no_grad()
    def import_state(self, weights: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`export_state`; shapes and names must match exactly."""
        expected = set(self.saved_tensors)
        if set(weights) != expected:
            raise ValueError(f"weights have tensors {sorted(weights)}, expected {sorted(expected)}")
        for name, attr in self.saved_tensors.items():
            target = getattr(self, attr)
            value = weights[name]
            if value.shape != target.shape:
                raise ValueError(f"weight {name} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
            target.copy_(value)

    def saelens_fields(self) -> dict:
        """Extra architecture-specific cfg.json fields SAELens expects (e.g. ``k``)."""
        return {}

    @classmethod
    def config_strategies(cls, st, d_sae: int) -> dict:
        """Hypothesis strategies (``st`` is ``hypothesis.strategies``) for the :class:`SAEConfig`
        fields only this architecture reads; :func:`toymodels.sae.strategies.sae_configs` uses them."""
        return {}

    @classmethod
    def loaded_config(cls, cfg: SAEConfig) -> SAEConfig:
        """The config of the SAE that a folder saved from one trained under ``cfg`` loads back as:
        ``cfg`` itself, unless saving changes the parametrisation (a folded decoder norm)."""
        return cfg


def mse_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Squared error summed over dimensions, averaged over samples (the pinned MSE)."""
    return (x_hat - x).pow(2).sum(-1).mean()


def default_aux_k(cfg: SAEConfig) -> int:
    return cfg.aux_k or max(1, min(cfg.d_sae, cfg.d_in // 2))
