"""Hypothesis strategies for SAE configurations of the registered architectures.

They live beside :class:`SAEConfig` rather than in :mod:`groundtruth.strategies` because the layers
only import downwards (``groundtruth`` knows nothing of ``toymodels``). Hypothesis is needed only
when this module is imported.
"""

from __future__ import annotations

from hypothesis import strategies as st

from groundtruth.strategies import seeds
from toymodels.sae.config import SAEConfig
from toymodels.sae.registry import architectures, sae_class

__all__ = ["sae_configs"]


@st.composite
def sae_configs(
    draw,
    architecture: st.SearchStrategy[str] | None = None,
    d_in: st.SearchStrategy[int] | None = None,
    d_sae: st.SearchStrategy[int] | None = None,
    seed: st.SearchStrategy[int] | None = None,
) -> SAEConfig:
    """Valid :class:`SAEConfig`s of any registered architecture: 2–16 inputs, 2–48 latents, a
    decoder-norm policy the class allows, and the fields only it reads from its ``config_strategies``."""
    arch = draw(architecture if architecture is not None else st.sampled_from(architectures()))
    cls = sae_class(arch)
    n_in = draw(d_in if d_in is not None else st.integers(2, 16))
    n_sae = draw(d_sae if d_sae is not None else st.integers(2, 48))
    fields: dict = {
        "seed": draw(seed if seed is not None else seeds()),
        "k": draw(st.integers(1, n_sae)),
        "sparsity_coefficient": draw(st.floats(0.0, 5.0)),
        "decoder_norm": draw(st.sampled_from(cls.decoder_policies)),
        "dead_after": draw(st.integers(1, 100)),
        "jump_init_threshold": draw(st.none() | st.floats(1e-3, 1.0)),
        "p_end": draw(st.floats(0.1, 1.0)),
    }
    if cls.resamples_dead and fields["decoder_norm"] == "unit":
        fields["resample_every"] = draw(st.sampled_from([0, 10, 50]))
    fields.update({name: draw(strategy) for name, strategy in cls.config_strategies(st, n_sae).items()})
    return SAEConfig(arch, n_in, n_sae, **fields)
