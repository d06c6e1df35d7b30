"""Random legal Othello games per second (on torch's threads), with the board before every move, and with per-token labels.

The anchor (DESIGN.md): othello_world's generator, ≈ 84 games/s per process; it is not installable, so the
ratio is to that published number. Run: python benchmarks/bench_othello.py [--games 20000] [--game othello6]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from games import get_game

ANCHOR = 84.0  # othello_world, games/s per process (DESIGN.md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs in this process")
    parser.add_argument("--game", choices=["othello", "othello6"], default="othello", help="the board: 8 x 8 or 6 x 6")
    args = parser.parse_args()
    othello = get_game(args.game)
    n_labels = len(othello.label_names)
    rng = np.random.default_rng(0)
    othello.random_games(1000, rng)  # warm-up
    print(
        f"{args.games} games per run, {torch.get_num_threads()} threads (anchor: othello_world {ANCHOR:.0f}/s per process)"
    )
    rates = {"games and boards": [], f"+ {n_labels} labels per token": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        games = othello.random_games(args.games, rng)
        played = time.perf_counter()
        labels = othello.labels(games)
        done = time.perf_counter()
        rates["games and boards"].append(args.games / (played - start))
        rates[f"+ {n_labels} labels per token"].append(args.games / (done - start))
        del labels
    for what, runs in rates.items():
        each = " / ".join(f"{r:,.0f}" for r in runs)
        print(f"  {what:24s} {each} games/s; median {np.median(runs) / ANCHOR:,.0f}x")
    gigabytes = args.games * othello.geometry.n_moves * n_labels / 1e9
    print(f"  mean {games.length.mean():.1f} moves; labels: {gigabytes:.2f} GB of bools per run")


if __name__ == "__main__":
    main()
