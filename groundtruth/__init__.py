"""Ground-truth sources with known latents: sparse feature models (toy superposition), hidden-Markov
processes with exact beliefs, and the containers they share. NumPy/torch only; nothing here trains."""

from groundtruth.correlation import LowRank, RandomCorrelation
from groundtruth.directions import Directions
from groundtruth.firing import Constant, Geometric, Linear, Zipf
from groundtruth.hierarchy import Hierarchy
from groundtruth.hmm import HMM, ProcessBatch
from groundtruth.latents import ActivationBatch, SparseCodes, TokenBatch
from groundtruth.magnitudes import ConstantMagnitude, FoldedNormal, Uniform
from groundtruth.presets import PRESETS, preset
from groundtruth.sparse_model import SparseFeatureConfig, SparseFeatureModel

__all__ = [
    "ActivationBatch",
    "Constant",
    "ConstantMagnitude",
    "Directions",
    "FoldedNormal",
    "Geometric",
    "HMM",
    "Hierarchy",
    "Linear",
    "LowRank",
    "PRESETS",
    "ProcessBatch",
    "RandomCorrelation",
    "SparseCodes",
    "SparseFeatureConfig",
    "SparseFeatureModel",
    "TokenBatch",
    "Uniform",
    "Zipf",
    "preset",
]
