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

from dataclasses import asdict, dataclass, field, fields, replace
from typing import ClassVar, Literal

import torch
from torch import nn

from groundtruth._checks import check_int, check_real


@dataclass(frozen=True)
class SAEConfig:
    """Hyperparameters of one SAE. Fields a variant does not use are ignored by it.

    ``sparsity_coefficient`` is the L1 coefficient (standard, gated, p-anneal) or the L0 coefficient
    (jumprelu). ``k`` is the number of active latents per sample (topk, batchtopk, matryoshka).
    """

    architecture: str
    d_in: int
    d_sae: int
    seed: int = 0
    k: int = 32
    sparsity_coefficient: float = 1.0
    decoder_norm: Literal["unit", "free"] | None = None  # None: the architecture's default policy
    resample_every: int = 0  # standard, unit decoder: resample dead latents every N steps (0 = never)
    resample_until: int = 0  # ... up to this step, so late latents can settle (0 = to the end)
    dead_after: int = 1000  # steps without firing after which a latent counts as dead (AuxK, resampling)
    aux_k: int = 0  # topk/batchtopk: latents used by the AuxK loss (0 = d_in // 2)
    aux_coefficient: float = 1 / 32
    jump_bandwidth: float = 0.05  # SAELens default; the paper's 0.001 assumes unit-scale activations
    jump_init_threshold: float | None = None  # None: set from the first training batch (see JumpReLUSAE)
    matryoshka_prefixes: tuple[int, ...] = ()  # nested dictionary sizes; the last is d_sae
    p_end: float = 0.2  # p-annealing: final exponent of the L_p penalty

    def __post_init__(self) -> None:
        from toymodels.sae.registry import sae_class  # the registry imports this module

        cls = sae_class(self.architecture)
        check_int("d_in", self.d_in)
        check_int("d_sae", self.d_sae)
        check_int("seed", self.seed, minimum=0)
        check_int("k", self.k)
        if cls.sparsity_knob == "k" and self.k > self.d_sae:
            raise ValueError(f"k={self.k} exceeds d_sae={self.d_sae}")
        check_real("sparsity_coefficient", self.sparsity_coefficient, 0.0)
        allowed = cls.decoder_policies
        if self.decoder_norm is None:
            object.__setattr__(self, "decoder_norm", allowed[0])
        elif self.decoder_norm not in allowed:
            raise ValueError(
                f"decoder_norm for {self.architecture} must be one of {allowed}, got {self.decoder_norm!r}"
            )
        check_int("resample_every", self.resample_every, minimum=0)
        if self.resample_every and not cls.resamples_dead:
            raise ValueError(
                f"resample_every={self.resample_every}: {self.architecture} does not resample dead latents"
            )
        if self.resample_every and self.decoder_norm != "unit":
            raise ValueError(
                f"resample_every={self.resample_every} needs decoder_norm='unit' (Bricken et al.'s recipe), "
                f"got decoder_norm={self.decoder_norm!r}"
            )
        check_int("resample_until", self.resample_until, minimum=0)
        check_int("dead_after", self.dead_after)
        check_int("aux_k", self.aux_k, minimum=0)
        check_real("aux_coefficient", self.aux_coefficient, 0.0)
        check_real("jump_bandwidth", self.jump_bandwidth, 0.0, low_open=True)
        if self.jump_init_threshold is not None:
            check_real("jump_init_threshold", self.jump_init_threshold, 0.0, low_open=True)
        check_real("p_end", self.p_end, 0.0, 1.0, low_open=True)
        prefixes = tuple(self.matryoshka_prefixes)
        if prefixes and (list(prefixes) != sorted(set(prefixes)) or prefixes[-1] != self.d_sae or prefixes[0] < 1):
            raise ValueError(
                f"matryoshka_prefixes must increase strictly from >= 1 to d_sae={self.d_sae}, got {prefixes}"
            )
        object.__setattr__(self, "matryoshka_prefixes", prefixes)

    def replace(self, **changes) -> SAEConfig:
        if "architecture" in changes and "decoder_norm" not in changes:
            changes["decoder_norm"] = None  # the new architecture's default, not the old one's
        return replace(self, **changes)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["matryoshka_prefixes"] = list(self.matryoshka_prefixes)
        return out

    @staticmethod
    def from_dict(data: dict) -> SAEConfig:
        known = {f.name for f in fields(SAEConfig)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SAEConfig fields: {sorted(unknown)}")
        data = dict(data)
        if "matryoshka_prefixes" in data:
            data["matryoshka_prefixes"] = tuple(data["matryoshka_prefixes"])
        return SAEConfig(**data)


@dataclass
class LossTerms:
    """The pieces of one training loss, for logging; ``total`` is what gets minimised."""

    total: torch.Tensor
    mse: torch.Tensor
    codes: torch.Tensor  # the batch's codes, detached, for firing statistics
    parts: dict[str, float] = field(default_factory=dict)


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
        """Enforce the decoder-norm policy and track which latents fire."""
        if self.decoder_norm == "unit":
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
        fired = (codes > 0).any(0)
        self.steps_since_fired += 1
        self.steps_since_fired[fired] = 0

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
