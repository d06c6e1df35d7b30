"""Hypothesis strategies for SAE configurations of the built-in architectures.

They live beside :class:`SAEConfig` rather than in :mod:`groundtruth.strategies` because the layers
only import downwards (``groundtruth`` knows nothing of ``toymodels``). Hypothesis is needed only
when this module is imported.
"""

from __future__ import annotations

from hypothesis import strategies as st

from groundtruth.strategies import seeds
from toymodels.sae.base import ARCHITECTURES, SAEConfig
from toymodels.sae.registry import SAE_CLASSES

__all__ = ["sae_configs"]


@st.composite
def sae_configs(
    draw,
    architecture: st.SearchStrategy[str] | None = None,
    d_in: st.SearchStrategy[int] | None = None,
    d_sae: st.SearchStrategy[int] | None = None,
    seed: st.SearchStrategy[int] | None = None,
) -> SAEConfig:
    """Valid :class:`SAEConfig`s: 2–16 inputs, 2–48 latents, and the knobs each architecture reads
    (k ≤ d_sae, a decoder-norm policy the architecture allows, nested Matryoshka prefixes)."""
    arch = draw(architecture if architecture is not None else st.sampled_from(ARCHITECTURES))
    n_in = draw(d_in if d_in is not None else st.integers(2, 16))
    n_sae = draw(d_sae if d_sae is not None else st.integers(2, 48))
    fields: dict = {
        "seed": draw(seed if seed is not None else seeds()),
        "k": draw(st.integers(1, n_sae)),
        "sparsity_coefficient": draw(st.floats(0.0, 5.0)),
        "decoder_norm": draw(st.sampled_from(SAE_CLASSES[arch].decoder_policies)),
        "dead_after": draw(st.integers(1, 100)),
        "jump_init_threshold": draw(st.none() | st.floats(1e-3, 1.0)),
        "p_end": draw(st.floats(0.1, 1.0)),
    }
    if arch == "standard" and fields["decoder_norm"] == "unit":
        fields["resample_every"] = draw(st.sampled_from([0, 10, 50]))
    if arch == "matryoshka_batchtopk" and n_sae > 1:
        inner = draw(st.lists(st.integers(1, n_sae - 1), max_size=3, unique=True))
        fields["matryoshka_prefixes"] = (*sorted(inner), n_sae)
    return SAEConfig(arch, n_in, n_sae, **fields)
