"""Hashes of seeded data that a refactor must leave unchanged, byte for byte.

Issue 17 moved the games behind the Game protocol and split chess into a subpackage; the same seeds must
still give the same bytes. This prints SHA-256 prefixes of Mess3's mixed-state graph to depth 11, of
10,000 Othello games' tokens and labels, and of 1,000 chess games' PGN-character and UCI tokens and labels.
Before issue 17 they were:

    mess3 265717 177147.0 4c4d76b7a89812d8
    othello b630059db8f3c69d
    chess f312df3563efe9dc

Run from the repository root: python benchmarks/refactor_hashes.py (about a minute on 2 cores).
"""

from __future__ import annotations

import hashlib

import numpy as np

from games import get_game
from games.chessgame import pgn_token_batch
from groundtruth.mixed_state import mixed_state_presentation
from groundtruth.processes import mess3


def digest(*arrays: np.ndarray) -> str:
    """A hash of the arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    graph = mixed_state_presentation(mess3(0.05, 0.85), 11)
    print(
        "mess3", len(graph), graph.level_counts().tolist()[-1], digest(graph.beliefs, graph.src, graph.dst, graph.prob)
    )
    othello = get_game("othello")
    batch = othello.token_batch(othello.random_games(10_000, np.random.default_rng(0)))
    print("othello", digest(batch.tokens.numpy(), batch.latents.numpy()))
    chess = get_game("chess")  # 200 plies, uniform moves: random_games's defaults before the refactor
    games = chess.random_games(1_000, np.random.default_rng(0))
    pgn, uci = pgn_token_batch(games), chess.token_batch(games)
    print("chess", digest(pgn.tokens.numpy(), pgn.latents.numpy(), uci.tokens.numpy(), uci.latents.numpy()))


if __name__ == "__main__":
    main()
