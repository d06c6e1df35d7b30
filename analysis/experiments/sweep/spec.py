"""A sweep file (TOML): which SAEs to train on which sources, at which widths, sparsities and seeds.

The file is read with the standard library's ``tomllib`` and resolved in full before anything runs: every
run's SAE config is built (and so validated), every factory imported, every source checked. Anything wrong
is one :class:`SweepError` naming the field and the value. The layout::

    [train]                      # shared by every run: TrainConfig fields, plus batch_size and n_eval
    steps = 600
    batch_size = 1024
    lr = 1e-3

    [sources.synth]              # optional: named sources (a preset name works without a table)
    preset = "synthsaebench-small"

    [saes.bricken]               # optional: named SAEs, an architecture or a factory with fields
    architecture = "standard"
    decoder_norm = "unit"

    [grid]                       # every combination of these lists (a scalar is a list of one)
    source = ["synth"]
    sae = ["topk", "standard", "bricken"]
    width = [512]
    target_l0 = [8, 16]
    seed = [0, 1, 2]

    [saes.e2e]                   # optional: trained end to end (toymodels.e2e) on a source with a model after it
    architecture = "standard"
    objective = "e2e"            # "local" (the default), "e2e" or "e2e+ds"

    [[runs]]                     # more combinations, each an explicit list entry (same keys as grid)
    sae = "jumprelu"
    coefficient = [0.5, 1.0]
    width = 512
    seed = 0

``target_l0`` sets ``k`` on TopK-style SAEs and steers the coefficient of penalty SAEs
(:attr:`toymodels.sae.SAEConfig.target_l0`); ``k`` and ``coefficient`` set the knob directly. An SAE's
``objective`` (:data:`toymodels.e2e.OBJECTIVES`) other than ``"local"`` needs a source with a model downstream
of its activations: a ``run`` hook (a transformer) or a ``toy_model`` (its ReLU output; ``"e2e"`` only).
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.experiments.sweep.sources import SOURCE_KINDS, SourceSpec, source_spec
from toymodels.e2e import OBJECTIVES
from toymodels.sae import SAE_CLASSES, SAEConfig, sae_class
from toymodels.training import TrainConfig


class SweepError(ValueError):
    """A sweep file the runner cannot use; the message names the field and the value."""


TRAIN_EXTRA = {"batch_size": 1024, "n_eval": 10_000, "device": "auto"}  # [train] keys beyond TrainConfig's
TRAIN_FIELDS = (
    "steps",
    "lr",
    "betas",
    "warmup_steps",
    "decay_fraction",
    "max_grad_norm",
    "checkpoint_every",
    "checkpoint_seconds",
)
CHECKPOINT_SECONDS = 60.0  # a killed sweep loses at most about a minute of each unfinished run
AXES = ("source", "sae", "width", "target_l0", "k", "coefficient", "seed")  # the keys of [grid] and [[runs]]
TOP = ("name", "train", "sources", "saes", "grid", "runs")


@dataclass(frozen=True)
class SAESpec:
    """How one run builds its SAE: a built-in (or registered) architecture's :class:`SAEConfig`, or a
    user's factory called as ``factory(d_in, d_sae, seed=seed, **params)``."""

    config: SAEConfig | None = None
    factory: str | None = None
    params: Mapping[str, Any] | None = None
    d_in: int = 0
    width: int = 0
    seed: int = 0
    objective: str = "local"  # what it is trained on (toymodels.e2e.OBJECTIVES)

    def identity(self) -> dict:
        trained = {} if self.objective == "local" else {"objective": self.objective}  # local: the ids of before
        if self.config is not None:
            return {**self.config.to_dict(), **trained}
        return {"factory": self.factory, "params": dict(self.params), "d_in": self.d_in, "d_sae": self.width,
                "seed": self.seed, **trained}  # fmt: skip

    def build(self):
        """A fresh, untrained SAE."""
        from toymodels.sae import make_sae

        if self.config is not None:
            return make_sae(self.config)
        from analysis.conformance import load_factory

        return load_factory(self.factory)(self.d_in, self.width, seed=self.seed, **self.params)


@dataclass(frozen=True)
class Run:
    """One SAE trained on one source: what the results table shows of it (``columns``) and what decides
    its weights (``config``, whose hash is its ``id``)."""

    columns: Mapping[str, Any]
    source: SourceSpec
    sae: SAESpec
    config: Mapping[str, Any]

    @property
    def id(self) -> str:
        return run_id(self.config)

    @property
    def stream_key(self) -> str:
        """Runs with the same key train on the same batches under one objective (one source, one seed)."""
        shared = {"source": self.config["source"], "seed": self.columns["seed"], "train": self.config["train"]}
        return run_id(shared if self.sae.objective == "local" else {**shared, "objective": self.sae.objective})


@dataclass(frozen=True)
class Sweep:
    name: str
    train: TrainConfig
    batch_size: int
    n_eval: int
    device: str
    runs: tuple[Run, ...]
    text: str  # the file as given, kept in the output folder


def run_id(config: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``config``'s canonical JSON: the same config, the same id."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_sweep(path: str | Path) -> Sweep:
    """Read and resolve the sweep file at ``path`` (a :class:`SweepError` names anything wrong)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SweepError(f"cannot read sweep file {str(path)!r}: {err.strerror}") from None
    return parse_sweep(text, name=path.stem)


def parse_sweep(text: str, *, name: str = "sweep") -> Sweep:
    """Resolve the sweep given as TOML ``text``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SweepError(f"not valid TOML: {err}") from None
    _known("", data, TOP)
    train, batch_size, n_eval, device = _train(_table(data, "train", required=True))
    sources = {key: _source(f"sources.{key}", value) for key, value in _table(data, "sources").items()}
    saes = {key: _sae_table(f"saes.{key}", value) for key, value in _table(data, "saes").items()}
    entries = []
    if "grid" in data:
        entries.append(("grid", _table(data, "grid")))
    runs_list = data.get("runs", [])
    if not isinstance(runs_list, list) or not all(isinstance(r, dict) for r in runs_list):
        raise SweepError(f"runs must be a list of tables ([[runs]]), got {runs_list!r}")
    entries += [(f"runs[{i}]", entry) for i, entry in enumerate(runs_list)]
    if not entries:
        raise SweepError("the sweep has no runs: give a [grid] table or [[runs]] entries")
    runs: dict[str, Run] = {}
    train_id = {**train.identity(), "batch_size": batch_size, "n_eval": n_eval}
    for where, entry in entries:
        for run in _expand(where, entry, sources, saes, train, train_id):
            runs.setdefault(run.id, run)  # the same run named twice trains once
    sweep_name = data.get("name", name)
    if not isinstance(sweep_name, str) or not sweep_name:
        raise SweepError(f"name must be a non-empty string, got {sweep_name!r}")
    return Sweep(sweep_name, train, batch_size, n_eval, device, tuple(runs.values()), text)


def _known(where: str, table: Mapping, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        prefix = f"{where}." if where else ""
        raise SweepError(f"unknown field {prefix}{unknown[0]} = {table[unknown[0]]!r} (known: {', '.join(allowed)})")


def _table(data: Mapping, key: str, *, required: bool = False) -> dict:
    if key not in data:
        if required:
            raise SweepError(f"missing [{key}] table")
        return {}
    value = data[key]
    if not isinstance(value, dict):
        raise SweepError(f"{key} must be a table, got {value!r}")
    return value


def _train(table: dict) -> tuple[TrainConfig, int, int, str]:
    _known("train", table, (*TRAIN_FIELDS, *TRAIN_EXTRA))
    if "steps" not in table:
        raise SweepError("train.steps is required (optimiser steps per SAE)")
    extra = {key: table.get(key, default) for key, default in TRAIN_EXTRA.items()}
    for key in ("batch_size", "n_eval"):
        if not isinstance(extra[key], int) or isinstance(extra[key], bool) or extra[key] < 1:
            raise SweepError(f"train.{key} must be a positive integer, got {extra[key]!r}")
    if not isinstance(extra["device"], str):
        raise SweepError(f"train.device must be a string such as 'auto', 'cpu' or 'cuda', got {extra['device']!r}")
    fields = {"checkpoint_seconds": CHECKPOINT_SECONDS, **{key: table[key] for key in TRAIN_FIELDS if key in table}}
    if "betas" in fields:
        fields["betas"] = tuple(fields["betas"])
    try:
        train = TrainConfig(**fields, log_every=max(1, table["steps"] // 10) if isinstance(table["steps"], int) else 1)
    except (TypeError, ValueError) as err:
        raise SweepError(f"train: {err}") from None
    return train, extra["batch_size"], extra["n_eval"], extra["device"]


def _source(where: str, table: Any) -> SourceSpec:
    if not isinstance(table, dict):
        raise SweepError(f"{where} must be a table with one of {SOURCE_KINDS}, got {table!r}")
    try:
        return source_spec(table)
    except (TypeError, ValueError) as err:
        raise SweepError(f"{where}: {err}") from None


def _sae_table(where: str, table: Any) -> dict:
    if not isinstance(table, dict):
        raise SweepError(f"{where} must be a table, got {table!r}")
    if table.get("objective", "local") not in OBJECTIVES:
        raise SweepError(f"{where}.objective must be one of {', '.join(OBJECTIVES)}, got {table['objective']!r}")
    if ("architecture" in table) == ("factory" in table):
        raise SweepError(f"{where} needs exactly one of architecture = '...' or factory = 'module:callable'")
    if "architecture" in table:
        if table["architecture"] not in SAE_CLASSES:
            raise SweepError(
                f"{where}.architecture: unknown architecture {table['architecture']!r} "
                f"(known: {', '.join(SAE_CLASSES)})"
            )
        fields = (set(SAEConfig.__dataclass_fields__) | {"objective"}) - {"d_in", "d_sae", "seed", "target_l0"}
        _known(where, table, tuple(sorted(fields)))
        return dict(table)
    from analysis.conformance import load_factory

    try:
        factory = load_factory(table["factory"])
    except ValueError as err:
        raise SweepError(f"{where}.factory: {err}") from None
    params = {k: v for k, v in table.items() if k not in ("factory", "objective")}
    accepts = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepts.values()):
        for key in params:
            if key not in accepts:
                raise SweepError(f"{where}.{key} = {params[key]!r}: factory {table['factory']!r} takes no {key!r}")
    return dict(table)


def _values(where: str, key: str, value: Any) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SweepError(f"{where}.{key} is an empty list")
    return values


def _expand(where: str, entry: dict, sources: dict, saes: dict, train: TrainConfig, train_id: dict) -> list[Run]:
    _known(where, entry, AXES)
    for key in ("source", "sae", "width"):
        if key not in entry:
            raise SweepError(f"{where}.{key} is required")
    knobs = [key for key in ("target_l0", "k", "coefficient") if key in entry]
    if len(knobs) > 1:
        raise SweepError(f"{where}: give one of target_l0, k and coefficient, not {' and '.join(knobs)}")
    axes = {key: _values(where, key, entry[key]) for key in entry}
    axes.setdefault("seed", [0])
    knob = knobs[0] if knobs else None
    runs = []
    for source_name, sae_name, width, seed, *knob_value in itertools.product(
        axes["source"], axes["sae"], axes["width"], axes["seed"], *([axes[knob]] if knob else [])
    ):
        source = _named_source(where, source_name, sources)
        here = f"{where} (source {source_name!r}, sae {sae_name!r}, width {width!r}, seed {seed!r})"
        _check_int(where, "width", width, 1)
        _check_int(where, "seed", seed, 0)
        sae, columns = _named_sae(here, sae_name, saes, source.d_in, width, seed, knob, *knob_value)
        _check_objective(here, sae.objective, source)
        columns = {"source": source_name, "sae": sae_name, **columns, "width": width}
        columns.update(steps=train.steps, lr=train.lr, batch_size=train_id["batch_size"], seed=seed)
        config = {"source": source.identity(), "sae": sae.identity(), "train": train_id}
        runs.append(Run(columns, source, sae, config))
    return runs


def _check_objective(where: str, objective: str, source: SourceSpec) -> None:
    """An end-to-end objective needs a model downstream of the source's activations."""
    if objective == "local" or source.model_hook is not None:
        return  # a hook with no layer after it for e2e+ds is refused by the Objective, as the run's failure
    if source.toy_model is None:
        raise SweepError(
            f"{where}: objective {objective!r} needs a source with a model after it (a run hook or a toy_model), "
            "not a sparse feature model"
        )
    if objective == "e2e+ds":
        raise SweepError(f"{where}: objective 'e2e+ds' needs layers after the SAE; a toy_model has none (use 'e2e')")


def _check_int(where: str, key: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise SweepError(f"{where}.{key} must be an integer >= {low}, got {value!r}")


def _named_source(where: str, name: Any, sources: dict) -> SourceSpec:
    if isinstance(name, str) and name in sources:
        return sources[name]
    try:
        return source_spec({"preset": name})
    except (TypeError, ValueError):
        known = ", ".join([*sources, "or a preset name"])
        raise SweepError(f"{where}.source: unknown source {name!r} (known: {known})") from None


def _named_sae(
    where: str, name: Any, saes: dict, d_in: int, width: int, seed: int, knob: str | None, value: Any = None
) -> tuple[SAESpec, dict]:
    table = saes.get(name) if isinstance(name, str) else None
    if table is None:
        if name not in SAE_CLASSES:
            known = ", ".join([*saes, *SAE_CLASSES])
            raise SweepError(f"{where}: unknown sae {name!r} (known: {known})")
        table = {"architecture": name}
    if knob is not None and (not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value)):
        raise SweepError(f"{where}: {knob} must be a number, got {value!r}")
    objective = table.get("objective", "local")
    if "factory" in table:
        params = {k: v for k, v in table.items() if k not in ("factory", "objective")}
        if knob is not None:
            params[{"coefficient": "sparsity_coefficient"}.get(knob, knob)] = value
        columns = {"architecture": table["factory"], "objective": objective, "target_l0": None, "k": None,
                   "coefficient": None}  # fmt: skip
        if knob is not None:
            columns[knob] = value
        spec = SAESpec(factory=table["factory"], params=params, d_in=d_in, width=width, seed=seed, objective=objective)
        return spec, columns
    fields = {k: v for k, v in table.items() if k not in ("architecture", "objective")}
    arch = table["architecture"]
    by_k = sae_class(arch).sparsity_knob == "k"
    if knob == "k" and not by_k:
        raise SweepError(f"{where}: k = {value!r}, but {arch} is set by a coefficient (use target_l0 or coefficient)")
    if knob == "coefficient" and by_k:
        raise SweepError(f"{where}: coefficient = {value!r}, but {arch} is set by k (use target_l0 or k)")
    if knob == "k" or (knob == "target_l0" and by_k):
        if knob == "target_l0" and value != round(value):
            raise SweepError(f"{where}: target_l0 = {value!r} sets k on {arch}, so it must be a whole number")
        fields["k"] = int(round(value))
    elif knob == "target_l0":
        fields["target_l0"] = float(value)
    elif knob == "coefficient":
        fields["sparsity_coefficient"] = float(value)
    prefixes = fields.get("matryoshka_prefixes")
    if prefixes and prefixes[-1] < width:  # inner widths given; the full width is this run's
        fields["matryoshka_prefixes"] = [*prefixes, width]
    if "matryoshka_prefixes" in fields:
        fields["matryoshka_prefixes"] = tuple(fields["matryoshka_prefixes"])
    try:
        config = SAEConfig(arch, d_in, width, seed=seed, **fields)
    except (TypeError, ValueError) as err:
        raise SweepError(f"{where}: {err}") from None
    columns = {
        "architecture": arch,
        "objective": objective,
        "target_l0": float(value) if knob == "target_l0" else None,
        "k": config.k if by_k else None,
        "coefficient": None if by_k else config.sparsity_coefficient,
    }
    return SAESpec(config=config, objective=objective), columns


__all__ = ["Run", "SAESpec", "Sweep", "SweepError", "load_sweep", "parse_sweep", "run_id"]
