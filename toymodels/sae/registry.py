"""The SAE architectures, each declared once on its class.

A class declares what the rest of the project needs to know about it (see :data:`DECLARATIONS`):
its name, its paper, its sparsity knob and which way the knob moves L0, its kind of sparsity, the
decoder-norm policies it allows and the name SAELens saves it under; and, where it differs from the
default (:data:`DEFAULTED`), the kind of data it is built for. Config validation, factories,
Hypothesis strategies, the experiments' variant lists, conformance declarations and the README's
table are all derived from these declarations, so adding an architecture means adding one module
whose class is passed to :func:`register_sae`. Users register their own classes the same way::

    from toymodels.sae import SparseAutoencoder, register_sae

    @register_sae
    class MySAE(SparseAutoencoder):
        architecture = "mine"
        paper = "Me et al. 2026"
        ...
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeVar

from toymodels.sae.base import SparseAutoencoder

if TYPE_CHECKING:
    from toymodels.sae.config import SAEConfig

# Kinds of sparsity, the vocabulary the conformance suite checks promises in:
SPARSITY_KINDS = (
    "topk",  # at most k non-zeros per sample (exactly k when enough pre-activations are positive)
    "batchtopk",  # k non-zeros per sample on average over a training batch; a fixed threshold at inference
    "threshold",  # a code is non-zero exactly when its pre-activation exceeds a learned threshold
    "penalty",  # a penalty in the loss trades sparsity for reconstruction; no structural promise
    "pursuit",  # at most k non-zeros per sample, one per greedy step over unit rows (fewer where it stops early)
)
# Kinds of data an architecture is built to recover features from; its conformance recovery property trains on it:
DATA_KINDS = (
    "flat",  # independent features (every architecture unless it says otherwise)
    "hierarchical",  # parents whose children fire only with them (groundtruth.Hierarchy), as Matryoshka targets
)
KNOBS = ("k", "sparsity_coefficient")  # the SAEConfig fields a sparsity knob may be
POLICIES = ("free", "unit")

# Declaration -> what it must be. Every registered class has each one.
DECLARATIONS = {
    "architecture": "its name, SAEConfig.architecture",
    "paper": "the paper the method comes from",
    "sparsity_knob": f"the SAEConfig field that sets its sparsity, one of {KNOBS}",
    "knob_raises_l0": "True when a larger knob means more active latents",
    "sparsity": f"its kind of sparsity, one of {SPARSITY_KINDS}",
    "decoder_policies": f"the decoder-norm policies it allows, from {POLICIES}, its default first",
    "saved_as": "the architecture name written to SAELens's cfg.json",
    "suite_defaults": "a dict of the SAEConfig fields its conformance-suite factory sets (a sparsity for unit-scale data)",
}
# Declarations SparseAutoencoder gives a default for; a class overrides them only where it differs.
DEFAULTED = {
    "built_for": f"the kind of data it is built for, one of {DATA_KINDS} (default 'flat')",
}

_CLASSES: dict[str, type[SparseAutoencoder]] = {}
SAE_CLASSES: Mapping[str, type[SparseAutoencoder]] = MappingProxyType(_CLASSES)  # read-only, always current

T = TypeVar("T", bound="type[SparseAutoencoder]")


def _check_declarations(cls: type) -> None:
    name = getattr(cls, "__name__", repr(cls))
    if not (isinstance(cls, type) and issubclass(cls, SparseAutoencoder)):
        raise TypeError(f"register_sae needs a SparseAutoencoder subclass, got {cls!r}")
    missing = [d for d in DECLARATIONS if not hasattr(cls, d)]
    # A subclass inherits its parent's knob and policies, but never its name or paper.
    missing += [d for d in ("architecture", "paper") if d not in vars(cls) and d not in missing]
    if missing:
        raise TypeError(f"{name} does not declare {', '.join(missing)} (see toymodels.sae.registry.DECLARATIONS)")
    checks = {
        "architecture": isinstance(cls.architecture, str) and cls.architecture.isidentifier(),
        "paper": isinstance(cls.paper, str) and bool(cls.paper.strip()),
        "sparsity_knob": cls.sparsity_knob in KNOBS,
        "knob_raises_l0": isinstance(cls.knob_raises_l0, bool),
        "sparsity": cls.sparsity in SPARSITY_KINDS,
        "decoder_policies": isinstance(cls.decoder_policies, tuple)
        and len(cls.decoder_policies) > 0
        and len(set(cls.decoder_policies)) == len(cls.decoder_policies)
        and set(cls.decoder_policies) <= set(POLICIES),
        "saved_as": isinstance(cls.saved_as, str) and bool(cls.saved_as),
        "suite_defaults": isinstance(cls.suite_defaults, Mapping)
        and not {"architecture", "d_in", "d_sae", "seed"} & set(cls.suite_defaults),
        "built_for": cls.built_for in DATA_KINDS,
    }
    for declaration, ok in checks.items():
        if not ok:
            what = {**DECLARATIONS, **DEFAULTED}[declaration]
            raise TypeError(f"{name}.{declaration} must be {what}, got {getattr(cls, declaration)!r}")


def register_sae(cls: T) -> T:
    """Add an SAE class to the registry (usable as a decorator). Its declarations are checked, and a
    second class under a name already taken is refused."""
    _check_declarations(cls)
    taken = _CLASSES.get(cls.architecture)
    if taken is not None and taken is not cls:
        raise ValueError(
            f"architecture {cls.architecture!r} is already registered by {taken.__module__}.{taken.__qualname__}"
        )
    _CLASSES[cls.architecture] = cls
    return cls


def architectures() -> tuple[str, ...]:
    """Names of the registered architectures, in registration order."""
    return tuple(_CLASSES)


def sae_class(architecture: str) -> type[SparseAutoencoder]:
    """The class registered under ``architecture``."""
    try:
        return _CLASSES[architecture]
    except (KeyError, TypeError):
        raise ValueError(f"architecture must be one of {architectures()}, got {architecture!r}") from None


def make_sae(cfg: SAEConfig) -> SparseAutoencoder:
    """A freshly initialised SAE of ``cfg.architecture``."""
    return sae_class(cfg.architecture)(cfg)


def architecture_table() -> str:
    """The README's table of architectures, in Markdown, from the declarations."""
    lines = [
        "| `architecture` | paper | sparsity knob | sparsity | decoder norm (default first) | saved as |",
        "|---|---|---|---|---|---|",
    ]
    for name, cls in _CLASSES.items():
        direction = "raises" if cls.knob_raises_l0 else "lowers"
        lines.append(
            f"| `{name}` | {cls.paper} | `{cls.sparsity_knob}` ({direction} L0) | {cls.sparsity} "
            f"| {', '.join(cls.decoder_policies)} | `{cls.saved_as}` |"
        )
    return "\n".join(lines)
