"""Random legal Othello games per second (on torch's threads), with the board before every move, and with per-token labels.

The anchor (DESIGN.md): othello_world's generator, ≈ 84 games/s per process; it is not installable, so the
ratio is to that published number. Run: python benchmarks/bench_othello.py [--games 20000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from games.othello import random_games, token_labels

ANCHOR = 84.0  # othello_world, games/s per process (DESIGN.md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=20_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    random_games(1000, rng)  # warm-up
    start = time.perf_counter()
    games = random_games(args.games, rng)
    played = time.perf_counter()
    labels = token_labels(games)
    done = time.perf_counter()
    print(
        f"{args.games} games, mean {games.length.mean():.1f} moves, {torch.get_num_threads()} threads "
        f"(anchor: othello_world {ANCHOR:.0f}/s per process)"
    )
    for what, seconds in (("games and boards", played - start), ("+ 384 labels per token", done - start)):
        rate = args.games / seconds
        print(f"  {what:24s} {rate:9,.0f} games/s  {rate / ANCHOR:6,.0f}x")
    print(f"  labels: {labels.nbytes / 1e9:.2f} GB of bools")


if __name__ == "__main__":
    main()
