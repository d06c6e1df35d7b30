"""Recovery experiments at scale: a sweep file names sources, SAEs, widths, sparsities and seeds; each
combination is a deterministic run (its id is the hash of its config) trained on a local pool of processes
or a Ray cluster, written to its own folder, and gathered into one table and the standard figures."""

from analysis.experiments.sweep.results import load_failures, load_results, summarise, write_results
from analysis.experiments.sweep.run import Outcome, Task, run_task
from analysis.experiments.sweep.runner import EXECUTORS, SweepReport, plan_tasks, run_sweep
from analysis.experiments.sweep.spec import Run, Sweep, SweepError, load_sweep, parse_sweep, run_id

__all__ = [
    "EXECUTORS",
    "Outcome",
    "Run",
    "Sweep",
    "SweepError",
    "SweepReport",
    "Task",
    "load_failures",
    "load_results",
    "load_sweep",
    "parse_sweep",
    "plan_tasks",
    "run_id",
    "run_sweep",
    "run_task",
    "summarise",
    "write_results",
]
