"""Named sparse feature models from the literature."""

from __future__ import annotations

from groundtruth.correlation import LowRank, RandomCorrelation
from groundtruth.directions import Directions
from groundtruth.firing import Geometric, Zipf
from groundtruth.hierarchy import Hierarchy
from groundtruth.magnitudes import FoldedNormal, Uniform
from groundtruth.sparse_model import SparseFeatureConfig


def sharkey2022(seed: int = 0) -> SparseFeatureConfig:
    """Sharkey, Braun & Millidge (2022), "Taking features out of superposition with sparse
    autoencoders": 512 unit features in 256 dims, p_i ∝ 0.99^i scaled to 5 active on average,
    correlated firing, coefficients uniform on [0, 1)."""
    return SparseFeatureConfig(
        d=256,
        n_features=512,
        firing=Geometric(0.99),
        target_l0=5.0,
        magnitude=Uniform(),
        correlation=RandomCorrelation(0.5),
        seed=seed,
    )


def _synthsaebench(d: int, n_features: int, n_roots: int, max_overlap: float, seed: int) -> SparseFeatureConfig:
    return SparseFeatureConfig(
        d=d,
        n_features=n_features,
        firing=Zipf(exponent=0.5, p_min=5e-4, p_max=0.4),
        magnitude=FoldedNormal(mean_start=5.0, mean_end=4.0, std=0.5, std_spread=0.5),
        correlation=LowRank(rank=25, scale=0.1),
        hierarchy=Hierarchy(
            n_roots=n_roots,
            branching=4,
            depth=3,
            mutually_exclusive=True,
            scale_children=True,
            compensate=True,
        ),
        directions=Directions(max_overlap=max_overlap),
        bias_norm=0.5,
        seed=seed,
    )


def synthsaebench16k(seed: int = 42) -> SparseFeatureConfig:
    """SynthSAEBench-16k (Chanin & Garriga-Alonso 2026): 16,384 features in 768 dims, Zipf firing
    (exponent 0.5, p in [5e-4, 0.4]), 128 trees of branching 4 and depth 3 with mutually exclusive,
    parent-scaled children, rank-25 copula (scale 0.1), magnitudes 5 → 4 with |N(0.5, 0.5²)| stds,
    bias norm 0.5. Directions are pushed apart to |cos| <= 0.2 (the original runs 100 Adam steps)."""
    return _synthsaebench(768, 16_384, 128, 0.2, seed)


def synthsaebench_small(seed: int = 42) -> SparseFeatureConfig:
    """The SynthSAEBench recipe at CPU size: 4,096 features in 256 dims, 32 trees (2,720 nodes,
    the same two-thirds share of features as the 16k model)."""
    return _synthsaebench(256, 4096, 32, 0.3, seed)


PRESETS = {
    "sharkey2022": sharkey2022,
    "synthsaebench16k": synthsaebench16k,
    "synthsaebench-small": synthsaebench_small,
}


def preset(name: str, seed: int | None = None) -> SparseFeatureConfig:
    """A named preset config; ``seed`` overrides the preset's default seed."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]() if seed is None else PRESETS[name](seed)
