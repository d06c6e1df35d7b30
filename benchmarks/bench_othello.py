"""Random legal Othello games per second, with the board before every move.

The anchor (DESIGN.md): othello_world's generator, ≈ 84 games/s per process; it is not installable, so the
ratio is to that published number. Run: python benchmarks/bench_othello.py [--games 20000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from games.othello import random_games

ANCHOR = 84.0  # othello_world, games/s per process (DESIGN.md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=20_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    random_games(1000, rng)  # warm-up
    start = time.perf_counter()
    games = random_games(args.games, rng)
    rate = args.games / (time.perf_counter() - start)
    print(
        f"{args.games} games, mean {games.length.mean():.1f} moves: {rate:,.0f} games/s on one thread "
        f"({rate / ANCHOR:,.0f}x othello_world's {ANCHOR:.0f} games/s per process)"
    )


if __name__ == "__main__":
    main()
