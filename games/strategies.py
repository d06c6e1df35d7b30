"""Hypothesis strategies for board games: random legal games of any registered game, and Othello and chess
games, game prefixes and positions.

They live here rather than in :mod:`groundtruth.strategies` because imports only point down the
layers (``groundtruth`` → ``games``). Like those, they are small by default and take strategies as
arguments; Hypothesis is a test-time dependency (the ``dev`` extra).
"""

from __future__ import annotations

try:
    from hypothesis import strategies as st
except ImportError as error:  # pragma: no cover - exercised only without the dev extra
    raise ImportError("games.strategies needs Hypothesis: pip install hypothesis (or groundtruth[dev])") from error

import chess
import numpy as np

from games import chessgame
from games.othello import Games, OthelloGeometry, random_games
from games.protocol import Game
from groundtruth.strategies import seeds

__all__ = [
    "chess_games",
    "chess_positions",
    "chess_prefixes",
    "games_of",
    "othello_games",
    "othello_positions",
    "othello_prefixes",
]


@st.composite
def games_of(
    draw, game: Game, n_games: st.SearchStrategy[int] | None = None, seed: st.SearchStrategy[int] | None = None
):
    """A record of random legal games (1–3 by default) of ``game``, any :class:`~games.protocol.Game`,
    drawn from a seed: what a property that holds for every game is checked on."""
    n = draw(n_games if n_games is not None else st.integers(1, 3))
    return game.random_games(n, np.random.default_rng(draw(seed if seed is not None else seeds())))


@st.composite
def othello_games(
    draw,
    n_games: st.SearchStrategy[int] | None = None,
    seed: st.SearchStrategy[int] | None = None,
    size: st.SearchStrategy[int] | None = None,
) -> Games:
    """A batch of uniformly random legal games (1–4 by default), drawn from a seed, on a board of a drawn
    ``size`` (8 × 8 by default; ``st.sampled_from([6, 8])`` checks a property on both boards)."""
    n = draw(n_games if n_games is not None else st.integers(1, 4))
    geometry = OthelloGeometry(draw(size if size is not None else st.just(8)))
    return random_games(n, np.random.default_rng(draw(seed if seed is not None else seeds())), geometry)


@st.composite
def othello_prefixes(draw, games: st.SearchStrategy[Games] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first moves of one random game: ``(moves [t], boards [t + 1, S])``, the boards before each
    move and after the last (0 empty, 1 black, 2 white; ``S`` squares); ``t`` runs from 0 to the game's length."""
    batch = draw(games if games is not None else othello_games(n_games=st.just(1)))
    g = draw(st.integers(0, len(batch.moves) - 1))
    t = draw(st.integers(0, int(batch.length[g])))
    return batch.moves[g, :t].copy(), batch.boards[g, : t + 1].copy()


@st.composite
def othello_positions(draw, games: st.SearchStrategy[Games] | None = None) -> tuple[np.ndarray, int]:
    """A position reached in a random game: ``(board [S], player)``, the board before a move and the
    player about to make it (0 black, 1 white), passes respected."""
    batch = draw(games if games is not None else othello_games(n_games=st.just(1)))
    g = draw(st.integers(0, len(batch.moves) - 1))
    t = draw(st.integers(0, int(batch.length[g]) - 1))
    return batch.boards[g, t].copy(), int(batch.player[g, t])


@st.composite
def chess_games(
    draw,
    n_games: st.SearchStrategy[int] | None = None,
    max_plies: st.SearchStrategy[int] | None = None,
    capture_weight: st.SearchStrategy[float] | None = None,
    seed: st.SearchStrategy[int] | None = None,
) -> chessgame.Games:
    """A batch of random legal chess games (1–3 games of up to 60 plies, uniform moves by default)."""
    n = draw(n_games if n_games is not None else st.integers(1, 3))
    plies = draw(max_plies if max_plies is not None else st.integers(1, 60))
    weight = draw(capture_weight if capture_weight is not None else st.just(1.0))
    return chessgame.random_games(n, np.random.default_rng(draw(seed if seed is not None else seeds())), plies, weight)


@st.composite
def chess_prefixes(draw, games: st.SearchStrategy[chessgame.Games] | None = None) -> list[str]:
    """The first moves (UCI) of a random game, from none to all of them."""
    batch = draw(games if games is not None else chess_games(n_games=st.just(1)))
    g = draw(st.integers(0, len(batch) - 1))
    return batch.uci(g)[: draw(st.integers(0, int(batch.length[g])))]


@st.composite
def chess_positions(draw, prefixes: st.SearchStrategy[list[str]] | None = None) -> chess.Board:
    """A python-chess ``Board`` reached by random legal play (its move stack holds the game so far)."""
    board = chess.Board()
    for move in draw(prefixes if prefixes is not None else chess_prefixes()):
        board.push_uci(move)
    return board
