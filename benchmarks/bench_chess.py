"""Random legal chess plies per second (on torch's threads), with every position, and with piece-on-square labels.

The anchor (DESIGN.md): a plain python-chess loop (list the legal moves, pick one, push), measured here in the
same run on one core, ≈ 30k plies/s per core on the reference machine. Run:
python benchmarks/bench_chess.py [--games 8192] [--max-plies 200]
"""

from __future__ import annotations

import argparse
import time

import chess
import numpy as np
import torch

from games.chessgame import position_labels, random_games


def python_chess_plies_per_second(games: int, max_plies: int, seed: int = 0) -> float:
    """The anchor: uniformly random legal games played move by move in python-chess."""
    rng = np.random.default_rng(seed)
    plies = 0
    start = time.perf_counter()
    for _ in range(games):
        board = chess.Board()
        for _ in range(max_plies):
            moves = list(board.legal_moves)
            if not moves or board.is_game_over():
                break
            board.push(moves[rng.integers(len(moves))])
            plies += 1
    return plies / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=8192)
    parser.add_argument("--max-plies", type=int, default=200)
    parser.add_argument("--anchor-games", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    random_games(256, rng, args.max_plies)  # warm-up
    start = time.perf_counter()
    games = random_games(args.games, rng, args.max_plies)
    played = time.perf_counter()
    labels = position_labels(games)
    done = time.perf_counter()
    anchor = python_chess_plies_per_second(args.anchor_games, args.max_plies)
    plies = int(games.length.sum())
    print(
        f"{args.games} games, mean {games.length.mean():.1f} plies (cap {args.max_plies}), "
        f"{torch.get_num_threads()} threads; anchor: python-chess loop {anchor:,.0f} plies/s on one core"
    )
    for what, seconds in (
        ("games and positions", played - start),
        (f"+ {labels.shape[-1]} labels per ply", done - start),
    ):
        rate = plies / seconds
        print(f"  {what:24s} {rate:9,.0f} plies/s  {rate / anchor:6.1f}x  ({args.games / seconds:,.0f} games/s)")


if __name__ == "__main__":
    main()
