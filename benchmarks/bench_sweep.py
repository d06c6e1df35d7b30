"""Sweep throughput on this machine: local workers against one, and SAEs sharing a data stream against
separate runs. Each sweep runs into a fresh folder, several times; prints the range of wall times and ratios.

- scaling: a 16-SAE sweep (4 architectures x 2 target L0s x 2 seeds on `synthsaebench-small`) on N workers
  (one thread each) against 1 worker of 1 thread (the parallel efficiency) and 1 worker of all this process's
  torch threads (what `--workers 1` does; its own speed-up from threads bounds what N workers can add);
- sharing: 4 SAEs on one stream (one seed) trained together against the same 4 trained one per task.
Run: python benchmarks/bench_sweep.py [--repeats 3] [--steps 200] [--width 256]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import torch

from analysis.experiments.sweep import parse_sweep, run_sweep
from groundtruth.threads import torch_threads

SWEEP = """
[train]
steps = {steps}
batch_size = 1024
lr = 1e-3
n_eval = 4000

[grid]
source = "synthsaebench-small"
sae = ["topk", "batchtopk", "standard", "jumprelu"]
width = {width}
target_l0 = {l0s}
seed = {seeds}
"""


def timed(text: str, **kwargs) -> float:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        report = run_sweep(parse_sweep(text), out, progress=False, **kwargs)
        seconds = time.perf_counter() - started
    if report.failed:
        raise RuntimeError(f"runs failed: {report.failed}")
    return seconds


def span(values: list[float]) -> str:
    return f"{min(values):.1f}–{max(values):.1f} s"


def ratios(slow: list[float], fast: list[float]) -> str:
    """The range of the paired ratios slow/fast (runs measured side by side)."""
    values = sorted(a / b for a, b in zip(slow, fast, strict=True))
    return f"{values[0]:.2f}–{values[-1]:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", choices=("scaling", "sharing"))
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    cores = os.cpu_count() or 1
    print(f"{cores} cores; {args.steps} steps of 1,024 per SAE, width {args.width}, {args.repeats} repeats")
    if args.only != "sharing":
        text = SWEEP.format(steps=args.steps, width=args.width, l0s="[8, 16]", seeds="[0, 1]")
        threads = torch.get_num_threads()
        single, one, many = [], [], []
        for _ in range(args.repeats):  # interleaved, so drifting load hits all alike
            with torch_threads(1):
                single.append(timed(text, workers=1))
            one.append(timed(text, workers=1))
            many.append(timed(text, workers=args.workers))
        per_worker = max(1, threads // args.workers)
        print(
            f"scaling, 16 SAEs: 1 worker x 1 thread {span(single)}; 1 worker x {threads} threads {span(one)}; "
            f"{args.workers} workers x {per_worker} thread {span(many)}"
        )
        print(f"  {args.workers} workers against 1 worker of 1 thread: {ratios(single, many)} (target >= 1.8x)")
        print(f"  {args.workers} workers against 1 worker of {threads} threads: {ratios(one, many)}")
        print(f"  torch's own speed-up from {threads} threads in one process: {ratios(single, one)}")
    if args.only != "scaling":
        text = SWEEP.format(steps=args.steps, width=args.width, l0s="16", seeds="0")
        shared, separate = [], []
        for _ in range(args.repeats):
            shared.append(timed(text, workers=1, group_size=4))
            separate.append(timed(text, workers=1, group_size=1))
        print(
            f"sharing, 4 SAEs on one stream: separate {span(separate)}; shared {span(shared)}; "
            f"speed-up {ratios(separate, shared)} (target >= 1.5x)"
        )


if __name__ == "__main__":
    main()
