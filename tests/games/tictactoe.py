"""Tic-tac-toe as a user would write a game for the :class:`~games.protocol.Game` protocol: plain Python
rules, a 3 × 3 board, nine move tokens. The protocol suite checks it beside Othello and chess, so that
nothing in the protocol assumes an 8 × 8 board or a vectorised engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from games import PAD, Board, Game

SQUARES = tuple(f"{c}{r}" for r in "123" for c in "abc")  # a1 b1 c1 a2 ... c3
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
CLASSES = ("mine", "theirs", "empty")


@dataclass(frozen=True)
class Record:
    """``moves [n, 9]`` squares played (-1 after the end); ``boards [n, 10, 9]`` before each move and after
    the last (0 empty, 1 X, 2 O; X moves first); ``length [n]`` moves played."""

    moves: np.ndarray
    boards: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return len(self.length)


def _over(board: list[int]) -> bool:
    return all(board) or any(board[a] and board[a] == board[b] == board[c] for a, b, c in LINES)


def _play(games: list[list[int]]) -> Record:
    """Record the given move lists, which must be legal and stop at the end of their game."""
    n = len(games)
    moves, boards, length = np.full((n, 9), -1), np.zeros((n, 10, 9), dtype=np.int8), np.zeros(n, dtype=np.int64)
    for g, game in enumerate(games):
        board = [0] * 9
        for t, square in enumerate(game):
            if _over(board) or board[square]:
                raise ValueError(f"move {t} of game {g} ({SQUARES[square]}) is not a legal move there")
            board[square] = 1 + t % 2
            moves[g, t], boards[g, t + 1 :], length[g] = square, board, t + 1
    return Record(moves, boards, length)


@dataclass(frozen=True)
class TicTacToe(Game):
    name: ClassVar[str] = "tictactoe"
    token_names: ClassVar[tuple[str, ...]] = ("<pad>", *SQUARES)
    label_names: ClassVar[tuple[str, ...]] = tuple(f"{c}@{s}" for c in (*CLASSES, "legal") for s in SQUARES)
    board: ClassVar[Board] = Board(
        SQUARES, CLASSES, "empty", ((6, 7, 8), (3, 4, 5), (0, 1, 2)), tuple("321"), tuple("abc")
    )
    Games: ClassVar[type] = Record
    n_ctx: ClassVar[int] = 8

    def random_games(self, n: int, rng: np.random.Generator) -> Record:
        games = []
        for _ in range(n):
            board, game = [0] * 9, []
            while not _over(board):
                square = int(rng.choice([s for s in range(9) if not board[s]]))
                board[square] = 1 + len(game) % 2
                game.append(square)
            games.append(game)
        return _play(games)

    def tokenize(self, games: Record) -> np.ndarray:
        return np.where(games.moves >= 0, games.moves + 1, PAD)

    def detokenize(self, tokens: np.ndarray) -> Record:
        return _play([[int(k) - 1 for k in row if k != PAD] for row in np.asarray(tokens)])

    def labels(self, games: Record) -> np.ndarray:
        out = np.zeros((len(games), 9, len(self.label_names)), dtype=bool)
        for g in range(len(games)):
            for t in range(int(games.length[g])):
                board, nxt = games.boards[g, t + 1].tolist(), 1 + (t + 1) % 2
                for s, disc in enumerate(board):
                    out[g, t, CLASSES.index("empty" if not disc else "mine" if disc == nxt else "theirs") * 9 + s] = (
                        True
                    )
                    out[g, t, 27 + s] = not disc and not _over(board)
        return out

    def legal_tokens(self, games: Record, n_ctx: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_ctx = self.check_context(n_ctx)
        rows = [
            (g, t, s + 1)
            for g in range(len(games))
            for t in range(min(n_ctx, int(games.length[g]) - 1))  # the game goes on after move t
            for s in range(9)
            if not games.boards[g, t + 1, s]
        ]
        g, t, token = np.array(rows, dtype=np.int64).reshape(-1, 3).T
        return g, t, token
