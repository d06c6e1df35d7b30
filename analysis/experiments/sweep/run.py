"""A sweep's unit of work: the runs that share one data stream (one source, one seed), trained together in
one process and each written to its own run folder.

A run folder, ``DIR/runs/<id>/``, appears in one rename when the run is finished (``run.json`` and the SAE
in SAELens layout), so a folder that exists is a finished run. An unfinished run keeps its checkpoints in
``DIR/work/<id>/`` and resumes from them; a run that raised is recorded in ``DIR/failed/<id>.json`` with its
error and does not stop the others.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from analysis.experiments.sweep.spec import Run
from groundtruth.atomic import atomic_dir, write_text_atomic
from groundtruth.devices import resolve_device
from toymodels.sae import SparseAutoencoder, save_sae, train_saes
from toymodels.training import TrainConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """Runs on one stream, with what they share; picklable, so any executor can ship it."""

    out_dir: str
    runs: tuple[Run, ...]
    train: TrainConfig
    batch_size: int
    n_eval: int
    device: str
    versions: dict
    data_workers: int | None = None  # processes generating batches; None: one per spare core on a GPU, else 0


@dataclass(frozen=True)
class Outcome:
    """What became of one run: ``finished``, ``skipped`` (finished before) or ``failed`` (with its error)."""

    id: str
    status: str
    error: str | None = None


def run_dir(out_dir: str | Path, run_id: str) -> Path:
    return Path(out_dir) / "runs" / run_id


def is_finished(out_dir: str | Path, run_id: str) -> bool:
    return (run_dir(out_dir, run_id) / "run.json").exists()


def versions() -> dict:
    """The package, git commit (when the code is a git checkout), torch and Python versions."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
        git = commit.stdout.strip() if commit.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        git = None
    try:
        package = importlib.metadata.version("groundtruth")
    except importlib.metadata.PackageNotFoundError:
        package = None
    return {"groundtruth": package, "git_commit": git, "torch": torch.__version__, "python": platform.python_version()}


def run_task(task: Task) -> list[Outcome]:
    """Train and score every unfinished run of ``task`` on their shared stream; never raises for one run."""
    out = Path(task.out_dir)
    todo = [run for run in task.runs if not is_finished(out, run.id)]
    outcomes = [Outcome(run.id, "skipped") for run in task.runs if is_finished(out, run.id)]
    if not todo:
        return outcomes
    try:
        device = resolve_device(task.device)
        source = todo[0].source.build(task.n_eval)
    except Exception as err:  # the source itself failed: every run on it did
        return outcomes + [record_failure(out, run, err) for run in todo]
    built: list[tuple[Run, SparseAutoencoder]] = []
    for run in todo:
        try:
            sae = run.sae.build()
            if not isinstance(sae, SparseAutoencoder):
                raise TypeError(
                    f"the factory returned a {type(sae).__name__}; sweeps train subclasses of "
                    "toymodels.sae.SparseAutoencoder"
                )
            built.append((run, sae))
        except Exception as err:
            outcomes.append(record_failure(out, run, err))
    if not built:
        return outcomes
    data_workers = task.data_workers
    if data_workers is None:  # a GPU outruns the generator on one core: generate on the others
        data_workers = max(1, (os.cpu_count() or 2) - 1) if device.type == "cuda" else 0
    seed, kind = built[0][0].columns["seed"], built[0][0].sae.objective  # a task's runs share both (stream_key)
    objective = None
    try:
        if kind == "local":
            stream = source.activations(task.batch_size, seed, workers=data_workers)
        else:
            stream, objective = source.end_to_end(kind, task.batch_size, seed)
    except Exception as err:
        return outcomes + [record_failure(out, run, err) for run, _ in built]
    started = time.perf_counter()
    try:
        results = train_saes(
            [sae for _, sae in built],
            stream,
            task.train,
            checkpoint_dirs=[out / "work" / run.id for run, _ in built],
            progress=False,
            device=device,
            isolate=True,
            objective=objective,
        )
    finally:
        stream.close()  # stops the data workers, if any
    train_seconds = time.perf_counter() - started
    for (run, sae), result in zip(built, results, strict=True):
        if isinstance(result, BaseException):
            outcomes.append(record_failure(out, run, result))
            continue
        try:
            outcomes.append(_finish(out, run, sae, source, task, train_seconds, result.samples, device, len(built)))
        except Exception as err:
            outcomes.append(record_failure(out, run, err))
    return outcomes


def _finish(out: Path, run: Run, sae, source, task: Task, train_seconds, samples, device, together: int) -> Outcome:
    started = time.perf_counter()
    report = source.score(sae)
    final = sae.sparsity_coefficient() if sae.sparsity_knob == "sparsity_coefficient" else None
    record = {
        "id": run.id,
        "columns": dict(run.columns),
        "config": dict(run.config),
        "metrics": {**report, "final_coefficient": final},
        "timings": {
            "train_seconds": train_seconds,
            "score_seconds": time.perf_counter() - started,
            "samples_per_second": samples / train_seconds if train_seconds > 0 else None,
            "saes_sharing_stream": together,  # trained in this process on one stream (finished runs excluded)
        },
        "versions": task.versions,
        "device": str(device),
    }
    with atomic_dir(run_dir(out, run.id)) as tmp:
        save_sae(sae, tmp / "sae")
        (tmp / "run.json").write_text(json.dumps(record, indent=1))
    shutil.rmtree(out / "work" / run.id, ignore_errors=True)
    (out / "failed" / f"{run.id}.json").unlink(missing_ok=True)
    return Outcome(run.id, "finished")


def record_failure(out: Path, run: Run, err: BaseException) -> Outcome:
    message = f"{type(err).__name__}: {err}"
    logger.warning("run %s (%s) failed: %s", run.id, dict(run.columns), message)
    record = {
        "id": run.id,
        "columns": dict(run.columns),
        "config": dict(run.config),
        "error": message,
        "traceback": "".join(traceback.format_exception(err)),
    }
    write_text_atomic(out / "failed" / f"{run.id}.json", json.dumps(record, indent=1))
    return Outcome(run.id, "failed", message)


__all__ = ["Outcome", "Task", "is_finished", "record_failure", "run_dir", "run_task", "versions"]
