"""The SAE family: one base, one module per architecture, one registry, SAELens-layout files.

Importing the package registers the built-in architectures (each module registers its classes).
"""

from toymodels.sae.base import LossTerms, SparseAutoencoder
from toymodels.sae.config import SAEConfig
from toymodels.sae.gated import GatedSAE
from toymodels.sae.io import load_sae, save_sae, saved_config
from toymodels.sae.jumprelu import JumpReLUSAE
from toymodels.sae.matching_pursuit import MatchingPursuitSAE
from toymodels.sae.registry import (
    SAE_CLASSES,
    architecture_table,
    architectures,
    make_sae,
    register_sae,
    sae_class,
)
from toymodels.sae.relu import PAnnealSAE, StandardSAE
from toymodels.sae.topk import BatchTopKSAE, MatryoshkaBatchTopKSAE, TopKSAE
from toymodels.sae.training import Trainer, train_sae, train_saes

__all__ = [
    "BatchTopKSAE",
    "GatedSAE",
    "JumpReLUSAE",
    "LossTerms",
    "MatchingPursuitSAE",
    "MatryoshkaBatchTopKSAE",
    "PAnnealSAE",
    "SAEConfig",
    "SAE_CLASSES",
    "SparseAutoencoder",
    "StandardSAE",
    "TopKSAE",
    "Trainer",
    "architecture_table",
    "architectures",
    "load_sae",
    "make_sae",
    "register_sae",
    "sae_class",
    "save_sae",
    "saved_config",
    "train_sae",
    "train_saes",
]
