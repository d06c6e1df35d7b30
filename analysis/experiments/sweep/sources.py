"""The activation sources a sweep trains SAEs on, as the sweep file names them.

Each kind resolves to a config whose dict is part of every run's identity, and builds (in the process that
trains) a :class:`Built` source: ``activations(batch_size, seed)``, the training stream a seed picks, and
``score(sae)``, the metrics of a trained SAE against what is known about the source. Kinds: a sparse feature
model (``preset``, ``sparse``), the hidden layer of a toy model (``toy_model``), and a hook of the transformer
in a beliefs or games run folder (``run``, :mod:`analysis.experiments.sweep.hooks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from analysis.metrics.recovery import score_sae
from analysis.metrics.splice import toy_splice_scores
from groundtruth import PRESETS, SparseFeatureConfig, SparseFeatureModel, preset
from groundtruth.threads import torch_threads
from toymodels.e2e import Objective
from toymodels.superposition import HiddenLayerSource, ToyModelConfig, train_toy_model

if TYPE_CHECKING:
    from analysis.experiments.sweep.hooks import ModelHook

SOURCE_KINDS = ("preset", "sparse", "toy_model", "run")


@dataclass(frozen=True)
class SourceSpec:
    """A resolved source: a sparse feature model (from a preset or given in full), the hidden layer of a
    toy model of superposition (trained from its config, deterministically, where it is used), or a hook of
    a trained transformer (read from its run folder where it is used)."""

    sparse: SparseFeatureConfig | None = None
    toy_model: ToyModelConfig | None = None
    model_hook: ModelHook | None = None

    @property
    def d_in(self) -> int:
        if self.model_hook is not None:
            return self.model_hook.d_in
        return self.sparse.d if self.sparse is not None else self.toy_model.d_hidden

    def identity(self) -> dict:
        if self.sparse is not None:
            return {"sparse": self.sparse.to_dict()}
        if self.model_hook is not None:
            return {"model_hook": self.model_hook.identity()}
        return {"toy_model": self.toy_model.to_dict()}

    def build(self, n_eval: int) -> Built:
        """The source, with ``n_eval`` held-out rows to score on."""
        if self.sparse is not None:
            return KnownFeatures(SparseFeatureModel(self.sparse), n_eval)
        if self.model_hook is not None:
            return self.model_hook.build(n_eval)
        toy = train_toy_model(self.toy_model, progress=False)
        return KnownFeatures(HiddenLayerSource(toy, seed=self.toy_model.seed), n_eval)


class Built(Protocol):
    """What a run needs of its source: a training stream per seed and a score for the trained SAE."""

    def activations(self, batch_size: int, seed: int, *, workers: int = 0):
        """The training stream ``seed`` picks (closable); ``workers`` > 0 may generate it in that many
        processes, with the same bytes."""

    def end_to_end(self, objective: str, batch_size: int, seed: int) -> tuple[Any, Objective]:
        """The stream ``seed`` picks of what the source's model takes, and the end-to-end ``objective`` an SAE
        trains on there (:class:`toymodels.e2e.Objective`); a ``ValueError`` where the source has no model."""

    def score(self, sae) -> dict[str, Any]: ...


class KnownFeatures:
    """A source whose true directions and codes are known: scored by
    :func:`analysis.metrics.recovery.score_sae` (every pinned metric) on a held-out set, and a toy model's
    hidden layer also downstream, by the toy's own loss with the SAE spliced in
    (:func:`analysis.metrics.splice.toy_splice_scores` on the held-out set's features)."""

    def __init__(self, source, n_eval: int) -> None:
        self.source = source
        self.held_out = source.eval_set(n_eval)
        self.parent = source.parent if bool((source.parent >= 0).any()) else None

    def activations(self, batch_size: int, seed: int, *, workers: int = 0):
        if workers and isinstance(self.source, SparseFeatureModel):
            return self.source.prefetch(batch_size, seed, workers=workers)
        return self.source.activations(batch_size, seed=seed)

    def end_to_end(self, objective: str, batch_size: int, seed: int) -> tuple[Any, Objective]:
        """The toy model's hidden activations (its training stream) and the objective through its output."""
        if not isinstance(self.source, HiddenLayerSource):
            raise ValueError(
                f"objective {objective!r} needs a model after the activations; a sparse feature model has none"
            )
        return self.activations(batch_size, seed), Objective(self.source.model, None, objective)

    def score(self, sae) -> dict[str, Any]:
        """The pinned metrics, on one thread: the same bits whatever the worker's thread count."""
        held = self.held_out
        with torch_threads(1):
            scores = score_sae(sae, held.x, held.codes.to_dense(), held.directions, parent=self.parent).to_dict()
            if isinstance(self.source, HiddenLayerSource):
                toy = self.source.model.to(sae.W_dec.device)  # the toy model computes beside the SAE
                scores |= toy_splice_scores(toy, sae, held.codes.to_dense())
        return scores


def source_spec(table: Mapping[str, Any]) -> SourceSpec:
    """The source a sweep file's table describes: ``{preset = NAME [, seed = N]}``, ``{sparse = {...
    SparseFeatureConfig fields}}``, ``{toy_model = {... ToyModelConfig fields}}`` or ``{run = FOLDER, hook =
    NAME [, sequences = N]}`` (:func:`analysis.experiments.sweep.hooks.model_hook`). Errors name the value."""
    kinds = [kind for kind in SOURCE_KINDS if kind in table]
    if len(kinds) != 1:
        raise ValueError(f"needs exactly one of {', '.join(SOURCE_KINDS)}, got {dict(table)!r}")
    kind = kinds[0]
    allowed = {
        "preset": {"preset", "seed"},
        "sparse": {"sparse"},
        "toy_model": {"toy_model"},
        "run": {"run", "hook", "sequences"},
    }[kind]
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]} = {table[unknown[0]]!r} for a {kind} source")
    if kind == "preset":
        name = table["preset"]
        if not isinstance(name, str) or name not in PRESETS:
            raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
        return SourceSpec(sparse=preset(name, seed=table.get("seed")))
    if kind == "run":  # reads a trained model with the experiments' code: imported only when a sweep needs it
        from analysis.experiments.sweep.hooks import model_hook

        return SourceSpec(model_hook=model_hook(table))
    if not isinstance(table[kind], Mapping):
        raise ValueError(f"{kind} must be a table of fields, got {table[kind]!r}")
    if kind == "sparse":
        return SourceSpec(sparse=SparseFeatureConfig.from_dict(table["sparse"]))
    return SourceSpec(toy_model=ToyModelConfig.from_dict(table["toy_model"]))


__all__ = ["SOURCE_KINDS", "Built", "KnownFeatures", "SourceSpec", "source_spec"]
