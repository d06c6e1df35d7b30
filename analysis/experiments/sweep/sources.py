"""The activation sources a sweep trains SAEs on, as the sweep file names them.

Each kind resolves to a config whose dict is part of every run's identity, and builds (in the process that
trains) an object with ``activations(batch_size, seed)``, ``eval_set(n)`` and ``parent``, the interface
:func:`analysis.experiments.recovery.run_variant` scores against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from groundtruth import PRESETS, SparseFeatureConfig, SparseFeatureModel, preset
from toymodels.superposition import HiddenLayerSource, ToyModelConfig, train_toy_model

SOURCE_KINDS = ("preset", "sparse", "toy_model")


@dataclass(frozen=True)
class SourceSpec:
    """A resolved source: a sparse feature model (from a preset or given in full) or the hidden layer of a
    toy model of superposition (trained from its config, deterministically, where it is used)."""

    sparse: SparseFeatureConfig | None = None
    toy_model: ToyModelConfig | None = None

    @property
    def d_in(self) -> int:
        return self.sparse.d if self.sparse is not None else self.toy_model.d_hidden

    def identity(self) -> dict:
        if self.sparse is not None:
            return {"sparse": self.sparse.to_dict()}
        return {"toy_model": self.toy_model.to_dict()}

    def build(self):
        if self.sparse is not None:
            return SparseFeatureModel(self.sparse)
        return HiddenLayerSource(train_toy_model(self.toy_model, progress=False), seed=self.toy_model.seed)


def source_spec(table: Mapping[str, Any]) -> SourceSpec:
    """The source a sweep file's table describes: ``{preset = NAME [, seed = N]}``, ``{sparse = {...
    SparseFeatureConfig fields}}`` or ``{toy_model = {... ToyModelConfig fields}}``. Errors name the value."""
    kinds = [kind for kind in SOURCE_KINDS if kind in table]
    if len(kinds) != 1:
        raise ValueError(f"needs exactly one of {', '.join(SOURCE_KINDS)}, got {dict(table)!r}")
    kind = kinds[0]
    allowed = {"preset": {"preset", "seed"}, "sparse": {"sparse"}, "toy_model": {"toy_model"}}[kind]
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]} = {table[unknown[0]]!r} for a {kind} source")
    if kind == "preset":
        name = table["preset"]
        if not isinstance(name, str) or name not in PRESETS:
            raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
        return SourceSpec(sparse=preset(name, seed=table.get("seed")))
    if not isinstance(table[kind], Mapping):
        raise ValueError(f"{kind} must be a table of fields, got {table[kind]!r}")
    if kind == "sparse":
        return SourceSpec(sparse=SparseFeatureConfig.from_dict(table["sparse"]))
    return SourceSpec(toy_model=ToyModelConfig.from_dict(table["toy_model"]))


__all__ = ["SOURCE_KINDS", "SourceSpec", "source_spec"]
