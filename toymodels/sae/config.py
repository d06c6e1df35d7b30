"""The configuration of one SAE, validated against the declarations of its architecture's class."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from groundtruth.checks import check_int, check_real
from groundtruth.config import Config
from toymodels.sae.registry import sae_class


@dataclass(frozen=True)
class SAEConfig(Config):
    """Hyperparameters of one SAE. Fields a variant does not use are ignored by it.

    ``sparsity_coefficient`` is the L1 coefficient (standard, gated, p-anneal) or the L0 coefficient
    (jumprelu). ``k`` is the number of active latents per sample (topk, batchtopk, matryoshka), or the most
    (matching_pursuit: its number of greedy steps).
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
    target_l0: float | None = None  # penalty SAEs: steer sparsity_coefficient (the start) to hold this L0
    residual_threshold: float = 0.0  # matching_pursuit: a sample's pursuit stops below this residual norm (0: never)

    def __post_init__(self) -> None:
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
        check_real("residual_threshold", self.residual_threshold, 0.0)
        if self.target_l0 is not None:
            if cls.sparsity_knob != "sparsity_coefficient":
                raise ValueError(f"target_l0={self.target_l0}: {self.architecture} sets its L0 with k, not a penalty")
            check_real("target_l0", self.target_l0, 0.0, self.d_sae, low_open=True)
            check_real("sparsity_coefficient", self.sparsity_coefficient, 0.0, low_open=True)
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
