"""One factory per registered architecture, in the form the conformance suite takes::

    groundtruth check-sae toymodels.sae.factories:topk

Each is ``make(d_in, d_sae, *, seed=0, **overrides)``; ``overrides`` are :class:`SAEConfig` fields. The
defaults are each class's ``suite_defaults``, which suit unit-scale activations (the suite's data): a
sparsity that leaves a few latents active and dead-latent handling that acts within a short run.
Every registered architecture, a user's included, has a factory here under its name; one named
recipe is added: ``standard_resampling``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from toymodels.sae.base import SparseAutoencoder
from toymodels.sae.config import SAEConfig
from toymodels.sae.registry import SAE_CLASSES, make_sae, sae_class

Factory = Callable[..., SparseAutoencoder]


def factory(architecture: str, name: str | None = None, **defaults) -> Factory:
    """A conformance-suite factory for ``architecture``: its class's ``suite_defaults``, then ``defaults``."""
    defaults = {**sae_class(architecture).suite_defaults, **defaults}

    def make(d_in: int, d_sae: int, *, seed: int = 0, **overrides) -> SparseAutoencoder:
        return make_sae(SAEConfig(architecture, d_in, d_sae, seed=seed, **{**defaults, **overrides}))

    make.__name__ = make.__qualname__ = name or architecture
    make.__doc__ = f"A fresh {architecture} SAE; defaults {defaults}, any SAEConfig field overridable."
    return make


# Bricken et al. (2023): unit decoder rows and dead-latent resampling (the Sharkey reproduction's recipe).
RECIPES: dict[str, Factory] = {
    "standard_resampling": factory(
        "standard", "standard_resampling", decoder_norm="unit", resample_every=25, dead_after=20
    ),
}


@cache
def _default(architecture: str) -> Factory:  # one object per name, so that factories pickle by reference
    return factory(architecture)


def factories() -> dict[str, Factory]:
    """Every factory by name: one per registered architecture, then the named recipes."""
    return {**{name: _default(name) for name in SAE_CLASSES}, **RECIPES}


def __getattr__(name: str) -> Factory:  # ``factories:topk`` for every registered architecture
    if name in SAE_CLASSES:
        return _default(name)
    if name in RECIPES:
        return RECIPES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *factories()})
