"""The SAE family: one base, one module per variant, one training loop, SAELens-layout files."""

from toymodels.sae.base import ARCHITECTURES, LossTerms, SAEConfig, SparseAutoencoder
from toymodels.sae.gated import GatedSAE
from toymodels.sae.io import load_sae, save_sae, saved_config
from toymodels.sae.jumprelu import JumpReLUSAE
from toymodels.sae.registry import SAE_CLASSES, make_sae
from toymodels.sae.relu import PAnnealSAE, StandardSAE
from toymodels.sae.topk import BatchTopKSAE, MatryoshkaBatchTopKSAE, TopKSAE

__all__ = [
    "ARCHITECTURES",
    "BatchTopKSAE",
    "GatedSAE",
    "JumpReLUSAE",
    "LossTerms",
    "MatryoshkaBatchTopKSAE",
    "PAnnealSAE",
    "SAEConfig",
    "SAE_CLASSES",
    "SparseAutoencoder",
    "StandardSAE",
    "TopKSAE",
    "load_sae",
    "make_sae",
    "save_sae",
    "saved_config",
]
