"""One factory per built-in architecture, in the form the conformance suite takes::

    groundtruth check-sae toymodels.sae.factories:topk

Each is ``make(d_in, d_sae, *, seed=0, **overrides)``; ``overrides`` are :class:`SAEConfig` fields. The
defaults suit unit-scale activations (the suite's data): a sparsity coefficient that leaves a few
latents active, k = 4, and dead-latent handling that acts within a short run.
"""

from __future__ import annotations

from collections.abc import Callable

from toymodels.sae.base import SAEConfig, SparseAutoencoder
from toymodels.sae.registry import make_sae

__all__ = [
    "FACTORIES",
    "batchtopk",
    "gated",
    "jumprelu",
    "matryoshka_batchtopk",
    "p_anneal",
    "standard",
    "standard_resampling",
    "topk",
]


def _factory(architecture: str, name: str | None = None, **defaults) -> Callable[..., SparseAutoencoder]:
    def make(d_in: int, d_sae: int, *, seed: int = 0, **overrides) -> SparseAutoencoder:
        return make_sae(SAEConfig(architecture, d_in, d_sae, seed=seed, **{**defaults, **overrides}))

    make.__name__ = make.__qualname__ = name or architecture
    make.__doc__ = f"A fresh {architecture} SAE; defaults {defaults}, any SAEConfig field overridable."
    return make


standard = _factory("standard", sparsity_coefficient=0.05)
# Bricken et al. (2023): unit decoder rows and dead-latent resampling (the Sharkey reproduction's recipe).
standard_resampling = _factory(
    "standard", "standard_resampling", decoder_norm="unit", sparsity_coefficient=0.05, resample_every=25, dead_after=20
)
p_anneal = _factory("p_anneal", sparsity_coefficient=0.05)
gated = _factory("gated", sparsity_coefficient=2.0)
jumprelu = _factory("jumprelu", sparsity_coefficient=0.1, jump_init_threshold=0.3, jump_bandwidth=1.0)
topk = _factory("topk", k=4, dead_after=20)
batchtopk = _factory("batchtopk", k=4, dead_after=20)
matryoshka_batchtopk = _factory("matryoshka_batchtopk", k=4, dead_after=20)

FACTORIES: dict[str, Callable[..., SparseAutoencoder]] = {
    f.__name__: f
    for f in (standard, standard_resampling, topk, batchtopk, jumprelu, gated, matryoshka_batchtopk, p_anneal)
}
