"""Architecture name → SAE class."""

from __future__ import annotations

from toymodels.sae.base import SAEConfig, SparseAutoencoder
from toymodels.sae.gated import GatedSAE
from toymodels.sae.jumprelu import JumpReLUSAE
from toymodels.sae.relu import PAnnealSAE, StandardSAE
from toymodels.sae.topk import BatchTopKSAE, MatryoshkaBatchTopKSAE, TopKSAE

SAE_CLASSES: dict[str, type[SparseAutoencoder]] = {
    cls.architecture: cls
    for cls in (StandardSAE, TopKSAE, BatchTopKSAE, JumpReLUSAE, GatedSAE, MatryoshkaBatchTopKSAE, PAnnealSAE)
}


def make_sae(cfg: SAEConfig) -> SparseAutoencoder:
    """A freshly initialised SAE of ``cfg.architecture``."""
    return SAE_CLASSES[cfg.architecture](cfg)
