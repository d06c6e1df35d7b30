"""The SAE of a variant at one sparsity knob: how the experiments name the SAEs they train (`groundtruth games`
takes ``(variant, knob)`` pairs)."""

from __future__ import annotations

from toymodels.sae import SAEConfig, sae_class


def sae_config(variant: str, knob: float, d_in: int, d_sae: int, seed: int, **extra) -> SAEConfig:
    """The SAE of architecture ``variant`` with its sparsity knob (the class's ``sparsity_knob``:
    ``k`` or the coefficient) set to ``knob``; ``extra`` sets other :class:`SAEConfig` fields."""
    name = sae_class(variant).sparsity_knob
    value = int(knob) if name == "k" else float(knob)
    return SAEConfig(variant, d_in, d_sae, seed=seed, **{name: value}, **extra)


__all__ = ["sae_config"]
