"""Run a sweep: resolve the file, skip finished runs, group the rest by data stream into tasks, and hand the
tasks to an executor, with one progress bar over the runs."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from analysis.experiments.sweep.executors import run_local
from analysis.experiments.sweep.run import Outcome, Task, is_finished, record_failure, run_task, versions
from analysis.experiments.sweep.spec import Run, Sweep, SweepError, load_sweep
from groundtruth.atomic import write_text_atomic
from groundtruth.devices import resolve_device

EXECUTORS = ("local", "ray")


@dataclass
class SweepReport:
    """How a call of :func:`run_sweep` went, run by run."""

    out_dir: Path
    total: int
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def plan_tasks(sweep: Sweep, out_dir: str | Path, *, workers: int, group_size: int, device: str) -> list[Task]:
    """The unfinished runs as tasks: runs on one stream (source and seed) share a task, up to ``group_size``
    of them, and groups are split further while there are fewer tasks than ``workers``. How runs are
    grouped changes no result: each SAE sees the same batches either way."""
    groups: dict[str, list[Run]] = {}
    for run in sweep.runs:
        if not is_finished(out_dir, run.id):
            groups.setdefault(run.stream_key, []).append(run)

    def split(size: int) -> list[tuple[Run, ...]]:
        chunks = []
        for runs in groups.values():
            n = math.ceil(len(runs) / size)
            chunks += [tuple(runs[i::n]) for i in range(n)]  # balanced: sizes differ by at most one
        return chunks

    size = group_size
    while size > 1 and len(split(size)) < workers:
        size -= 1
    stamp = versions()
    return [
        Task(str(out_dir), chunk, sweep.train, sweep.batch_size, sweep.n_eval, device, stamp) for chunk in split(size)
    ]


def run_sweep(
    sweep: str | Path | Sweep,
    out_dir: str | Path,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    device: str | None = None,
    group_size: int = 4,
    progress: bool = True,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> SweepReport:
    """Train and score every run of ``sweep`` (a file or a :class:`Sweep`) not yet finished in ``out_dir``.

    ``executor`` is ``"local"`` (``workers`` processes, default one per core, this process's torch threads
    shared out among them) or ``"ray"`` (a cluster at ``address``, or a local one when None). ``device`` overrides the
    file's ``train.device``. Finished runs are skipped, interrupted ones resume from their checkpoints, and
    a run that fails is recorded in ``out_dir/failed/`` without stopping the others.
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    if executor not in EXECUTORS:
        raise SweepError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    device = device or sweep.device
    cores = os.cpu_count() or 1
    if executor == "local":
        try:
            on_gpu = resolve_device(device).type == "cuda"
        except ValueError as err:
            raise SweepError(str(err)) from None
        workers = workers or (1 if on_gpu else cores)
    elif workers is None:
        workers = cores
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise SweepError(f"workers must be a positive integer, got {workers!r}")
    threads = max(1, torch.get_num_threads() // workers)  # this process's torch threads, shared out
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "sweep.toml", sweep.text)
    tasks = plan_tasks(sweep, out, workers=workers, group_size=group_size, device=device)
    report = SweepReport(out, len(sweep.runs))
    if executor == "local":
        results = run_local(run_task, tasks, workers=min(workers, max(1, len(tasks))), threads=threads)
    else:
        from analysis.experiments.sweep.ray_executor import run_ray

        results = run_ray(run_task, tasks, address=address, threads=threads)
    done = len(sweep.runs) - sum(len(t.runs) for t in tasks)
    bar = tqdm(total=len(sweep.runs), initial=done, unit="run", desc=sweep.name, disable=not progress)
    try:
        for task, result in results:
            if isinstance(result, BaseException):  # the task as a whole died (a worker killed, a lost node)
                result = [record_failure(out, run, result) for run in task.runs]
            for outcome in result:
                report.outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
            bar.update(len(result))
            bar.set_postfix(failed=report.count("failed"), refresh=False)
    finally:
        bar.close()
    return report


__all__ = ["EXECUTORS", "SweepReport", "plan_tasks", "run_sweep"]
