"""How fast the sparse-feature data path feeds a trainer, and whether 16 cores would keep a GPU busy.

Times `synthsaebench16k` batches of 1,024 from the serial stream (``model.activations``) on 1 and 2 torch
threads and from worker processes (``model.prefetch``, one torch thread each) with 1 and 2 workers, plus the
transport alone (zero batches of the same size through the same slots), in several interleaved runs (load
from other jobs on a shared machine then hits every configuration alike), and prints the median and range
of each: wall-clock samples/s, and the CPU seconds per batch spent by the consumer and by the workers (read
from /proc), which other jobs' load does not inflate the way it inflates wall-clock time.

Then it fits the simplest model of the process path on n cores, one of them kept for the consumer (the
training loop that receives the batches):

    samples/s (n cores) = min(per-core rate x (n - 1) x efficiency, consumer ceiling)

twice: from wall-clock time (per-core rate = 1 worker's samples/s; efficiency = rate(2 workers) /
(2 x rate(1 worker))), as the brief asks, and from CPU time (per-core rate = 1,024 / a worker's CPU seconds per
batch; efficiency = CPU per batch with 1 worker / with 2, i.e. how much two workers slow each other down:
memory bandwidth, caches). The consumer ceiling is 1,024 / the consumer's CPU seconds per batch of the
transport. The assumption: the efficiency measured at 2 workers holds at 15 (batches are independent and
share only the read-only model, so what could break it is memory bandwidth, which 2 workers cannot reveal).
It compares the prediction with what a GPU consumes: SAELens trains a 200M-sample SAE of width 4,096 in
15-20 min on an H100, about 167k-222k samples/s.

Run from the repository root with the thread count set explicitly, e.g.
OMP_NUM_THREADS=2 python benchmarks/bench_data_path.py [--runs 5 --batches 100]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from groundtruth import SparseFeatureModel, preset
from groundtruth.prefetch import Prefetch

GPU_SAMPLES = 200e6
GPU_MINUTES = (15, 20)  # SAELens, SAE of width 4,096 on SynthSAEBench-16k, one H100
ROWS = 1024


@dataclass
class Timing:
    rate: float  # samples/s, wall clock
    consumer_cpu: float  # CPU seconds per batch in the consuming process (all its threads)
    worker_cpu: float | None  # CPU seconds per batch in the workers together (None without workers)


def empty_batch(key: int) -> torch.Tensor:
    """A batch that costs nothing to compute: what the transport alone (slots, queues) delivers."""
    return torch.zeros(ROWS, 768)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes ``pids`` so far (Linux /proc)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def timed(batches, n: int, warmup: int, pids: list[int] = ()) -> Timing:
    """Time ``n`` batches after ``warmup`` (which drains what a prefetcher holds, so the pipeline is steady)."""
    for _ in range(warmup):
        next(batches)
    cpu, workers, start = time.process_time(), cpu_seconds(pids), time.perf_counter()
    for _ in range(n):
        next(batches)
    wall = time.perf_counter() - start
    cpu, workers = time.process_time() - cpu, cpu_seconds(pids) - workers
    return Timing(n * ROWS / wall, cpu / n, workers / n if pids else None)


def serial(model: SparseFeatureModel, threads: int, n: int, seed: int) -> Timing:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return timed(model.activations(ROWS, seed=seed), n, warmup=2)
    finally:
        torch.set_num_threads(before)


def processes(model: SparseFeatureModel, workers: int, n: int, seed: int) -> Timing:
    with model.prefetch(ROWS, seed=seed, workers=workers) as batches:
        return timed(batches, n, warmup=4 * workers, pids=batches.pids)  # warm-up: twice the default depth


def transport(workers: int, n: int) -> Timing:
    with Prefetch(empty_batch, itertools.count(), workers=workers) as batches:
        return timed(batches, n, warmup=4 * workers, pids=batches.pids)


def spread(values: list[float], scale: float = 1.0, fmt: str = ",.0f") -> str:
    low, mid, high = (v * scale for v in (min(values), statistics.median(values), max(values)))
    return f"{mid:>9{fmt}}  [{low:>9{fmt}} - {high:>9{fmt}}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="interleaved runs of every configuration (>= 3)")
    parser.add_argument("--batches", type=int, default=100, help="timed batches of 1,024 per configuration and run")
    parser.add_argument("--cores", type=int, default=16, help="the machine to predict")
    args = parser.parse_args()
    if args.runs < 3:
        parser.error(f"--runs must be at least 3 to report a range, got {args.runs}")
    print(
        f"torch {torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"{os.cpu_count()} cores here, load average {os.getloadavg()[0]:.1f} at start"
    )
    started = time.perf_counter()
    model = SparseFeatureModel(preset("synthsaebench16k"))
    print(f"synthsaebench16k built in {time.perf_counter() - started:.1f} s; batches of {ROWS:,}")
    with model.prefetch(ROWS, workers=1) as warm:  # start the forkserver (it imports torch) outside the timings
        next(warm)
    configs = {
        "serial, 1 thread": lambda seed: serial(model, 1, args.batches, seed),
        "serial, 2 threads": lambda seed: serial(model, 2, args.batches, seed),
        "1 worker process": lambda seed: processes(model, 1, args.batches, seed),
        "2 worker processes": lambda seed: processes(model, 2, args.batches, seed),
        "transport only, 1 worker": lambda seed: transport(1, 5 * args.batches),
    }
    runs: dict[str, list[Timing]] = {name: [] for name in configs}
    for run in range(args.runs):
        for name, measure in configs.items():
            runs[name].append(measure(run))
    print(f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print(f"{'':26s} {'samples/s (wall clock)':^33s} {'consumer CPU ms/batch':^33s} {'workers CPU ms/batch':^33s}")
    print(
        f"{'':26s}"
        + f" {'median':>9}  [{'min':>9} - {'max':>9}]" * 3
        + f"   ({args.runs} runs x {args.batches} batches)"
    )
    for name, timings in runs.items():
        workers = [t.worker_cpu for t in timings if t.worker_cpu is not None]
        print(
            f"{name:26s} {spread([t.rate for t in timings])} {spread([t.consumer_cpu for t in timings], 1e3, ',.2f')} "
            + (spread(workers, 1e3, ",.2f") if workers else "")
        )
    print("(transport only: zero batches of 1,024 x 768 through the same slots and queues)")

    def median(name: str, field: str) -> float:
        return statistics.median(getattr(t, field) for t in runs[name])

    one, two = runs["1 worker process"], runs["2 worker processes"]
    ceiling = ROWS / median("transport only, 1 worker", "consumer_cpu")
    workers = args.cores - 1
    wall_core = median("1 worker process", "rate")
    wall_eff = median("2 worker processes", "rate") / (2 * wall_core)
    cpu_core = ROWS / median("1 worker process", "worker_cpu")
    # worker_cpu is the workers' CPU per delivered batch, all workers together: 2 workers that do not slow each
    # other down spend what 1 worker spends per batch.
    cpu_eff = median("1 worker process", "worker_cpu") / median("2 worker processes", "worker_cpu")
    low = min(t.rate for t in one) * min(t.rate for t in two) / (2 * max(t.rate for t in one))
    print(
        f"\nconsumer ceiling: {ceiling:,.0f} samples/s (1,024 / the consumer's CPU per batch of the transport; "
        f"the serial stream's own CPU says {ROWS / median('serial, 1 thread', 'consumer_cpu'):,.0f} samples/s "
        f"per core)"
    )
    need_low, need_high = (GPU_SAMPLES / (60 * m) for m in reversed(GPU_MINUTES))
    print(
        f"a GPU consumes: SAELens trains a width-4,096 SAE on {GPU_SAMPLES / 1e6:.0f}M samples in "
        f"{GPU_MINUTES[0]}-{GPU_MINUTES[1]} min on an H100 = {need_low:,.0f} - {need_high:,.0f} samples/s"
    )
    print(
        f"model: samples/s = min(per-core rate x {workers} workers x efficiency, consumer ceiling), "
        f"{args.cores} cores with one kept for the consumer; efficiency measured at 2 workers, assumed to hold "
        f"at {workers}"
    )
    for basis, core, eff, note in (
        ("wall clock", wall_core, wall_eff, f"; low end {low * workers:,.0f} from the slowest runs"),
        ("CPU time", cpu_core, cpu_eff, ""),
    ):
        predicted = min(core * workers * eff, ceiling)
        verdict = (
            "keeps up with"
            if predicted >= need_high
            else "keeps up with the slow end of"
            if predicted >= need_low
            else "falls short of"
        )
        print(
            f"  from {basis:10s}: {core:,.0f} per core x {workers} x {eff:.2f} = {core * workers * eff:,.0f} "
            f"-> {predicted:,.0f} samples/s{note}: {verdict} the GPU ({predicted / need_high:.2f}x its fast end)"
        )


if __name__ == "__main__":
    main()
