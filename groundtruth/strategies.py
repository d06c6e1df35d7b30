"""Hypothesis strategies for ground-truth sources, for property-based tests of interpretability methods.

Every strategy is small by default and takes strategies as arguments, so a test narrows or widens
exactly the part it cares about::

    from hypothesis import given, strategies as st
    from groundtruth import strategies as gts

    @given(gts.activation_batches(gts.sparse_feature_models(gts.sparse_feature_configs(d=st.just(8)))))
    def test_my_method(batch): ...

Hypothesis is a test-time dependency (the ``dev`` extra); importing this module without it raises an
ImportError that says so. The rest of the library never imports it.
"""

from __future__ import annotations

try:
    from hypothesis import assume
    from hypothesis import strategies as st
except ImportError as error:  # pragma: no cover - exercised only without the dev extra
    raise ImportError(
        "groundtruth.strategies needs Hypothesis: pip install hypothesis (or groundtruth[dev])"
    ) from error

import torch

from groundtruth.correlation import LowRank, RandomCorrelation
from groundtruth.directions import Directions, welch_bound
from groundtruth.firing import Constant, Geometric, Linear, Zipf
from groundtruth.hierarchy import Hierarchy
from groundtruth.hmm import HMM
from groundtruth.latents import ActivationBatch
from groundtruth.magnitudes import ConstantMagnitude, FoldedNormal, Uniform
from groundtruth.processes import PROCESSES, mixture, product, random_epsilon_machine, random_hmm
from groundtruth.sparse_model import SparseFeatureConfig, SparseFeatureModel

__all__ = [
    "activation_batches",
    "correlations",
    "dictionaries",
    "firing_schedules",
    "hierarchies",
    "hmms",
    "magnitudes",
    "processes",
    "seeds",
    "sparse_feature_configs",
    "sparse_feature_models",
]


def seeds() -> st.SearchStrategy[int]:
    """Seeds for configs and ``torch.Generator``s."""
    return st.integers(0, 2**31 - 1)


def _probability(low: float = 1e-3, high: float = 0.9) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False)


def firing_schedules() -> st.SearchStrategy:
    """Constant, geometric, linear or Zipf firing probabilities."""
    zipf = st.builds(
        lambda e, lo, span: Zipf(e, lo, min(lo + span, 1.0)),
        st.floats(0.1, 2.0),
        _probability(1e-3, 0.5),
        _probability(),
    )
    return st.one_of(
        st.builds(Constant, _probability()),
        st.builds(Geometric, st.floats(0.5, 1.0, exclude_min=True), _probability()),
        st.builds(Linear, _probability(), _probability()),
        zipf,
    )


def magnitudes() -> st.SearchStrategy:
    """Uniform, constant or folded-normal coefficient distributions."""
    positive = st.floats(0.1, 5.0)
    return st.one_of(
        st.builds(lambda lo, span: Uniform(lo, lo + span), st.floats(0.0, 2.0), positive),
        st.builds(ConstantMagnitude, positive),
        st.builds(FoldedNormal, positive, positive, st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
    )


def correlations() -> st.SearchStrategy:
    """No correlation, a low-rank Gaussian copula, or a dense random correlation matrix."""
    return st.one_of(
        st.none(),
        st.builds(LowRank, st.integers(1, 3), st.floats(0.0, 3.0)),
        st.builds(RandomCorrelation, st.floats(0.0, 1.0)),
    )


@st.composite
def hierarchies(
    draw,
    max_nodes: int = 30,
    n_roots: st.SearchStrategy[int] | None = None,
    branching: st.SearchStrategy[int] | None = None,
    depth: st.SearchStrategy[int] | None = None,
) -> Hierarchy:
    """Forests with at most ``max_nodes`` features, every flag drawn."""
    spec = Hierarchy(
        n_roots=draw(n_roots if n_roots is not None else st.integers(1, 3)),
        branching=draw(branching if branching is not None else st.integers(1, 3)),
        depth=draw(depth if depth is not None else st.integers(1, 2)),
        mutually_exclusive=draw(st.booleans()),
        scale_children=draw(st.booleans()),
        compensate=draw(st.booleans()),
    )
    assume(spec.n_nodes <= max_nodes)
    return spec


@st.composite
def sparse_feature_configs(
    draw,
    d: st.SearchStrategy[int] | None = None,
    n_features: st.SearchStrategy[int] | None = None,
    firing: st.SearchStrategy | None = None,
    magnitude: st.SearchStrategy | None = None,
    correlation: st.SearchStrategy | None = None,
    hierarchy: st.SearchStrategy | None = None,
    target_l0: st.SearchStrategy | None = None,
    bias_norm: st.SearchStrategy[float] | None = None,
    noise_std: st.SearchStrategy[float] | None = None,
    seed: st.SearchStrategy[int] | None = None,
) -> SparseFeatureConfig:
    """Valid :class:`SparseFeatureConfig`s; each argument overrides the strategy for that field.

    Defaults: 1–12 dimensions, 1–30 features, any schedule, magnitude and correlation, a hierarchy
    half the time (the feature count grows to fit it), no target L0, small bias and noise.
    """
    features = draw(n_features if n_features is not None else st.integers(1, 30))
    forest = draw(hierarchy if hierarchy is not None else st.one_of(st.none(), hierarchies(max_nodes=30)))
    if forest is not None:
        if n_features is not None:
            assume(forest.n_nodes <= features)
        features = max(features, forest.n_nodes)
    l0 = draw(target_l0 if target_l0 is not None else st.none())
    if l0 is not None:
        assume(0 < l0 <= features)
    return SparseFeatureConfig(
        d=draw(d if d is not None else st.integers(1, 12)),
        n_features=features,
        firing=draw(firing if firing is not None else firing_schedules()),
        target_l0=l0,
        magnitude=draw(magnitude if magnitude is not None else magnitudes()),
        correlation=draw(correlation if correlation is not None else correlations()),
        hierarchy=forest,
        bias_norm=draw(bias_norm if bias_norm is not None else st.sampled_from([0.0, 0.5, 3.0])),
        noise_std=draw(noise_std if noise_std is not None else st.sampled_from([0.0, 0.01])),
        seed=draw(seed if seed is not None else seeds()),
    )


@st.composite
def sparse_feature_models(draw, configs: st.SearchStrategy[SparseFeatureConfig] | None = None) -> SparseFeatureModel:
    """Built models from ``configs`` (default :func:`sparse_feature_configs`)."""
    return SparseFeatureModel(draw(configs if configs is not None else sparse_feature_configs()))


@st.composite
def activation_batches(
    draw,
    models: st.SearchStrategy[SparseFeatureModel] | None = None,
    batch_size: st.SearchStrategy[int] | None = None,
    seed: st.SearchStrategy[int] | None = None,
) -> ActivationBatch:
    """Batches ``x`` with their true sparse codes and directions, from a drawn model and seed."""
    model = draw(models if models is not None else sparse_feature_models())
    n = draw(batch_size if batch_size is not None else st.integers(1, 32))
    return model.sample(n, torch.Generator().manual_seed(draw(seed if seed is not None else seeds())))


@st.composite
def dictionaries(
    draw,
    n_features: st.SearchStrategy[int] | None = None,
    d: st.SearchStrategy[int] | None = None,
    max_overlap: st.SearchStrategy[float] | None = None,
    seed: st.SearchStrategy[int] | None = None,
) -> tuple[torch.Tensor, float]:
    """Unit-norm ground-truth dictionaries ``[n_features, d]`` whose largest pairwise ``|cos|`` is at most
    the drawn ``max_overlap``; returns ``(directions, max_overlap)``.

    The default overlap lies between 1.5× the Welch bound (the least any arrangement can reach) plus
    0.1, and 1, so that pushing directions apart converges quickly. The margin matters in 3 and 4
    dimensions, where the Welch bound is loose: 14 lines in space could not be pushed to 1.5× their
    bound (0.80) for most seeds, but always to 0.90. A given ``max_overlap`` strategy must leave that
    room too.
    """
    n = draw(n_features if n_features is not None else st.integers(1, 24))
    dim = draw(d if d is not None else st.integers(2, 12))
    floor = min(1.0, 1.5 * welch_bound(n, dim) + 0.1)
    if max_overlap is None:
        overlap = draw(st.floats(max(floor, 0.05), 1.0))
    else:
        overlap = draw(max_overlap)
        assume(floor <= overlap <= 1.0 and overlap > 0)
    g = torch.Generator().manual_seed(draw(seed if seed is not None else seeds()))
    return Directions(max_overlap=overlap).build(n, dim, g), overlap


@st.composite
def hmms(
    draw,
    n_states: st.SearchStrategy[int] | None = None,
    n_tokens: st.SearchStrategy[int] | None = None,
    unifilar: st.SearchStrategy[bool] | None = None,
    seed: st.SearchStrategy[int] | None = None,
) -> HMM:
    """Random valid ergodic HMMs: Dirichlet rows (generally non-unifilar, with some near-zero
    entries) or random minimal ε-machines (unifilar, with forbidden words)."""
    s = draw(n_states if n_states is not None else st.integers(1, 4))
    v = draw(n_tokens if n_tokens is not None else st.integers(2, 3))
    drawn_seed = draw(seed if seed is not None else seeds())
    if draw(unifilar if unifilar is not None else st.booleans()):
        return random_epsilon_machine(s, v, seed=drawn_seed)
    return random_hmm(s, v, seed=drawn_seed, concentration=draw(st.sampled_from([0.3, 1.0, 3.0])))


@st.composite
def processes(draw, components: st.SearchStrategy[HMM] | None = None) -> HMM:
    """Any kind of process the library builds: a named zoo member, a random HMM from ``components``
    (default :func:`hmms` with at most 3 states), a non-ergodic mixture of two or a product of two."""
    parts = components if components is not None else hmms(n_states=st.integers(1, 3))
    kind = draw(st.sampled_from(["zoo", "random", "mixture", "product"]))
    if kind == "zoo":
        return PROCESSES[draw(st.sampled_from(sorted(PROCESSES)))]()
    if kind == "random":
        return draw(parts)
    first, second = draw(parts), draw(parts)
    if kind == "product":
        return product(first, second)
    assume(first.n_tokens == second.n_tokens)  # a mixture's components share a vocabulary
    weight = draw(st.floats(0.1, 0.9))
    return mixture([first, second], [weight, 1 - weight])
