"""Shared builders for the SAE tests."""

import torch

from toymodels.sae import BatchTopKSAE, JumpReLUSAE, SAEConfig, SparseAutoencoder, make_sae


def make(arch: str, d_in: int = 8, d_sae: int = 16, seed: int = 0, **kw) -> SparseAutoencoder:
    kw.setdefault("k", min(4, d_sae))
    return make_sae(SAEConfig(architecture=arch, d_in=d_in, d_sae=d_sae, seed=seed, **kw))


@torch.no_grad()
def perturb(sae: SparseAutoencoder, g: torch.Generator, scale: float = 0.1) -> SparseAutoencoder:
    """Move every parameter off its (often symmetric or zero) initial value."""
    for p in sae.parameters():
        p.add_(torch.randn(p.shape, generator=g) * scale)
    if isinstance(sae, JumpReLUSAE):
        sae.threshold.abs_()
        sae.threshold_set.fill_(True)  # the threshold is given, not to be started from the first batch
    if isinstance(sae, BatchTopKSAE):
        sae.threshold.fill_(float(torch.rand((), generator=g)) * 2 * scale)
        sae.threshold_updates.fill_(1)
    return sae
