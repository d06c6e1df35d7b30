"""Belief regression with a 1,000-permutation shuffled-target baseline, against refitting each
permutation from scratch (what a per-fit least-squares call such as sklearn's does).

Activations are a random linear image of the exact Mess3 beliefs plus noise, at the paper's sizes:
every 10-token sequence (59,049 × 10 positions), 64 dimensions (one layer) and 320 (five layers
concatenated); and RRXOR's 436 sequences.
Run: python benchmarks/bench_beliefs.py [--shuffles 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from analysis.metrics.beliefs import belief_data, belief_regression
from analysis.metrics.splits import sequence_split
from groundtruth.processes import process


def synthetic_acts(beliefs: torch.Tensor, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    embed = torch.randn(beliefs.shape[-1], d, generator=g)
    return beliefs.float() @ embed + 0.05 * torch.randn(*beliefs.shape[:-1], d, generator=g)


def refit_seconds(acts: torch.Tensor, beliefs: torch.Tensor, refits: int) -> float:
    """Seconds per permutation when each shuffled fit is solved from scratch with lstsq."""
    b, t = beliefs.shape[:2]
    train = ~sequence_split(b, 0.2, torch.Generator().manual_seed(0))[:, None].expand(b, t).reshape(-1)
    x = torch.cat([acts.reshape(b * t, -1).double(), torch.ones(b * t, 1, dtype=torch.float64)], 1)[train]
    y = beliefs.reshape(b * t, -1)[train]
    g = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for _ in range(refits):
        torch.linalg.lstsq(x, y[torch.randperm(len(y), generator=g)])
    return (time.perf_counter() - start) / refits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shuffles", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, d in (("mess3", 64), ("mess3", 320), ("rrxor", 320)):
        data = belief_data(process(name), 10)
        acts = synthetic_acts(data.beliefs, d, seed=0)
        start = time.perf_counter()
        fit = belief_regression(acts, data.beliefs, weights=data.weights, shuffles=args.shuffles)
        seconds = time.perf_counter() - start
        per_refit = refit_seconds(acts, data.beliefs, refits=5)
        rows = data.beliefs.shape[0] * data.beliefs.shape[1]
        print(
            f"{name}: {rows:,} rows x {d} dims, fit + {args.shuffles} shuffles: {seconds:.1f} s "
            f"(R² {fit.r2:.3f}, shuffled {fit.shuffled_r2:.3f}); refitting each from scratch: "
            f"{per_refit * args.shuffles:.0f} s, {per_refit * args.shuffles / seconds:.0f}x"
        )


if __name__ == "__main__":
    main()
