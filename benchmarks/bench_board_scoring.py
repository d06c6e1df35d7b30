"""Board scoring time: 59,000 Othello positions × 4,096 latents × 384 properties × 11 thresholds.

Counts every (threshold, latent, property) for coverage, then board reconstruction on a 50/50 split of
the same positions. Codes are TopK-like (k active latents per position, the rest exactly 0); labels are
those of real random games. The anchor is the issue's budget: 60 s on 2 CPU cores. Run:
python benchmarks/bench_board_scoring.py [--games 1000] [--latents 4096] [--k 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from analysis.metrics.board import board_reconstruction, classifier_counts, coverage
from games import get_game

BUDGET = 60.0  # seconds on 2 cores (issue 5)


def topk_codes(n: int, m: int, k: int, generator: torch.Generator) -> torch.Tensor:
    codes = torch.zeros(n, m)
    rows = torch.arange(n)[:, None].expand(n, k)
    cols = torch.rand(n, m, generator=generator).topk(k, dim=1).indices
    codes[rows, cols] = torch.rand(n, k, generator=generator) * 5
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=1000)
    parser.add_argument("--latents", type=int, default=4096)
    parser.add_argument("--k", type=int, default=64)
    args = parser.parse_args()
    othello = get_game("othello")
    games = othello.random_games(args.games, np.random.default_rng(0))
    labels = torch.from_numpy(othello.labels(games)[:, : othello.n_ctx].reshape(-1, 384).copy())
    codes = topk_codes(len(labels), args.latents, args.k, torch.Generator().manual_seed(0))
    print(
        f"{len(labels):,} positions x {args.latents:,} latents (L0 {args.k}) x {labels.shape[1]} properties "
        f"x 11 thresholds, {torch.get_num_threads()} threads; budget {BUDGET:.0f} s"
    )
    start = time.perf_counter()
    cov = coverage(classifier_counts(codes, labels))
    counted = time.perf_counter()
    half = len(labels) // 2
    rec = board_reconstruction(codes[:half], labels[:half], codes[half:], labels[half:])
    done = time.perf_counter()
    for what, seconds in (("coverage (all counts)", counted - start), ("+ reconstruction", done - start)):
        print(f"  {what:24s} {seconds:6.1f} s  ({seconds / BUDGET:.2f} of the budget)")
    print(f"  random codes: coverage {cov.value:.3f}, reconstruction F1 {rec.f1:.3f} (chance level, as it should be)")


if __name__ == "__main__":
    main()
