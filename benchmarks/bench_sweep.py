"""Sweep throughput on this machine: local workers against one, and SAEs sharing a data stream against
separate runs. Each sweep runs into a fresh folder, several times; prints the range of wall times and ratios.

- scaling: a 16-SAE sweep (4 architectures x 2 target L0s x 2 seeds on `synthsaebench-small`) on 1 worker
  (all cores' torch threads) against N workers (one thread each);
- sharing: 4 SAEs on one stream (one seed) trained together against the same 4 trained one per task.
Run: OMP_NUM_THREADS=1 python benchmarks/bench_sweep.py [--repeats 3] [--steps 200] [--width 256]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

from analysis.experiments.sweep import parse_sweep, run_sweep

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
        one, many = [], []
        for _ in range(args.repeats):  # interleaved, so drifting load hits both alike
            one.append(timed(text, workers=1))
            many.append(timed(text, workers=args.workers))
        ratios = sorted(a / b for a, b in zip(one, many, strict=True))
        print(
            f"scaling, 16 SAEs: 1 worker x {cores} threads {span(one)}; {args.workers} workers x "
            f"{max(1, cores // args.workers)} thread {span(many)}; speed-up {ratios[0]:.2f}–{ratios[-1]:.2f}x "
            f"(target >= 1.8x on 2 cores)"
        )
    if args.only != "scaling":
        text = SWEEP.format(steps=args.steps, width=args.width, l0s="16", seeds="0")
        shared, separate = [], []
        for _ in range(args.repeats):
            shared.append(timed(text, workers=1, group_size=4))
            separate.append(timed(text, workers=1, group_size=1))
        ratios = sorted(a / b for a, b in zip(separate, shared, strict=True))
        print(
            f"sharing, 4 SAEs on one stream: separate {span(separate)}; shared {span(shared)}; "
            f"speed-up {ratios[0]:.2f}–{ratios[-1]:.2f}x (target >= 1.5x)"
        )


if __name__ == "__main__":
    main()
