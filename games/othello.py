"""Othello rules on bitboards, vectorised over a batch of games.

A board is two ``uint64`` arrays, the discs of the player to move and of the opponent; bit ``8 * row +
col`` is the square in row ``row`` (A–H, top to bottom) and column ``col`` (1–8), so square 0 is A1 and
27, 28, 35, 36 are the centre. Black moves first from the standard start (D5 and E4 black, D4 and E5
white). A player with no legal move passes; the game ends when neither player can move.

Moves are found with shift-and-mask fills along the 8 directions (a line of opponent discs followed
by an empty square is a legal move; one closed by the mover's own disc is flipped), so each step costs
a few dozen array operations for the whole batch instead of a Python loop per game.

:class:`Othello` is the game as a token source (:class:`~games.protocol.Game`): OthelloGPT's tokens and
the board after every move, for the player who moves next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

import numpy as np

from games.bitboards import FULL as _FULL
from games.bitboards import to_squares
from games.protocol import PAD, Board, Game, register_game, select
from groundtruth.checks import check_int
from groundtruth.threads import map_threads

_COL_1 = np.uint64(0x0101_0101_0101_0101)  # column 1 (bit 0 of each row)
_COL_8 = np.uint64(0x8080_8080_8080_8080)  # column 8
_NOT_COL_1 = _FULL ^ _COL_1
_NOT_COL_8 = _FULL ^ _COL_8

# (shift, left?, mask applied after the shift): a left shift by 1 moves a disc one column right, so
# discs arriving in column 1 wrapped around from column 8 and are masked out (and so on).
_DIRECTIONS = (
    (1, True, _NOT_COL_1),  # east
    (1, False, _NOT_COL_8),  # west
    (8, True, _FULL),  # south
    (8, False, _FULL),  # north
    (9, True, _NOT_COL_1),  # south-east
    (7, True, _NOT_COL_8),  # south-west
    (7, False, _NOT_COL_1),  # north-east
    (9, False, _NOT_COL_8),  # north-west
)
CENTRE = (27, 28, 35, 36)
PLAYABLE = tuple(s for s in range(64) if s not in CENTRE)  # the 60 squares a move can take


def _shift(bits: np.ndarray, step: int, left: bool, mask: np.uint64) -> np.ndarray:
    moved = np.left_shift(bits, np.uint64(step)) if left else np.right_shift(bits, np.uint64(step))
    return moved & mask


def square_name(square: int) -> str:
    """``0`` → ``"A1"``, ``63`` → ``"H8"``."""
    return "ABCDEFGH"[square // 8] + str(square % 8 + 1)


def start(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` boards at the start, black to move: (mover, opponent) bitboards."""
    black = np.uint64((1 << 28) | (1 << 35))  # D5 (row D, col 5) and E4
    white = np.uint64((1 << 27) | (1 << 36))  # D4 and E5
    return np.full(n, black, dtype=np.uint64), np.full(n, white, dtype=np.uint64)


def legal_moves(mover: np.ndarray, opponent: np.ndarray) -> np.ndarray:
    """Bitboards of the squares the mover may play."""
    empty = ~(mover | opponent)
    legal = np.zeros_like(mover)
    for step, left, mask in _DIRECTIONS:
        run = _shift(mover, step, left, mask) & opponent
        for _ in range(5):  # a line holds at most 6 opponent discs
            run |= _shift(run, step, left, mask) & opponent
        legal |= _shift(run, step, left, mask) & empty
    return legal


def flips(mover: np.ndarray, opponent: np.ndarray, move: np.ndarray) -> np.ndarray:
    """Bitboards of the opponent discs that playing ``move`` (square indices) flips; 0 for an illegal move."""
    placed = np.left_shift(np.uint64(1), move.astype(np.uint64))
    flipped = np.zeros_like(mover)
    for step, left, mask in _DIRECTIONS:
        run = _shift(placed, step, left, mask) & opponent
        for _ in range(5):
            run |= _shift(run, step, left, mask) & opponent
        closed = (_shift(run, step, left, mask) & mover) != 0
        flipped |= np.where(closed, run, np.uint64(0))
    occupied = (placed & (mover | opponent)) != 0
    return np.where(occupied, np.uint64(0), flipped)


@dataclass(frozen=True)
class Games:
    """A batch of finished games, one row per game, padded after its last move.

    ``moves [n, 60]``: squares played in order (passes are not moves; -1 after the end).
    ``player [n, 60]``: who played each move (0 black, 1 white; -1 after the end), so a pass shows as
    the same player moving twice in a row. ``boards [n, 61, 64]``: the board before each move and after
    the last (0 empty, 1 black, 2 white); rows after the end repeat the final board.
    ``legal [n, 60]`` and ``flipped [n, 60]``: bitboards of the moves open to each move's player and of
    the discs each move flipped (0 after the end). ``length [n]``: moves played. ``score [n]``: black
    discs minus white discs at the end.
    """

    moves: np.ndarray
    player: np.ndarray
    boards: np.ndarray
    legal: np.ndarray
    flipped: np.ndarray
    length: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.length)


CHUNK = 8192  # games drawn from one seeded generator; fixed, so results do not depend on threads


def random_games(n: int, rng: np.random.Generator) -> Games:
    """``n`` games of uniformly random legal moves (the OthelloGPT synthetic dataset's policy).

    Games are played in chunks of :data:`CHUNK`, each from its own generator seeded from ``rng``, on
    torch's threads (NumPy releases the GIL): the same games on any number of threads.
    """
    check_int("n", n)
    starts = range(0, n, CHUNK)
    seeds = rng.integers(0, 2**63 - 1, size=len(starts)).tolist()
    games = _empty(n)  # every field is written by _play, chunk by chunk
    # Each chunk is played into its rows of `games`: concatenating chunks afterwards would run on one thread.
    map_threads(lambda a, seed: _play(select(games, slice(a, a + CHUNK)), _uniform_play(seed)), starts, seeds)
    return games


def _uniform_play(seed: int) -> Callable:
    """A chooser for :func:`_play`: every live game goes on with a uniformly random legal move."""
    rng = np.random.default_rng(seed)
    return lambda t, rows, legal: (np.ones(len(rows), dtype=bool), _uniform_square(legal, rng))


def _empty(n: int) -> Games:
    """A record of ``n`` games with every field allocated and none written."""
    return Games(
        moves=np.empty((n, 60), dtype=np.int64),
        player=np.empty((n, 60), dtype=np.int8),
        boards=np.empty((n, 61, 64), dtype=np.int8),
        legal=np.empty((n, 60), dtype=np.uint64),
        flipped=np.empty((n, 60), dtype=np.uint64),
        length=np.empty(n, dtype=np.int64),
        score=np.empty(n, dtype=np.int64),
    )


def _replay(squares: np.ndarray) -> Games:
    """The games whose moves are ``squares [n, 60]`` (-1 after each game's last move), passes implied.
    Raises ``ValueError`` naming the first move that is illegal or follows the end of its game."""
    games = _empty(len(squares))

    def given(t: int, rows: np.ndarray, legal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        want = squares[rows, t]
        going = want >= 0
        bad = going & ((legal >> np.maximum(want, 0).astype(np.uint64)) & np.uint64(1) == 0)
        for i in np.flatnonzero(bad)[:1]:
            raise ValueError(f"move {t} of game {rows[i]} ({square_name(int(want[i]))}) is not a legal move there")
        return going, want[going]

    _play(games, given)
    over = np.flatnonzero((squares >= 0).sum(1) > games.length)[:1]
    for g in over:
        raise ValueError(f"game {g} is over after move {games.length[g]}, but more moves follow")
    return games


def _play(games: Games, choose: Callable) -> None:
    """Play the rows of ``games`` from the start to the end of each game, writing every field in place.
    ``choose(t, rows, legal)`` gets the live games' rows and legal-move bitboards at move ``t`` and returns
    which of them go on (the others end there) and the square each one that goes on plays."""
    n = len(games.moves)
    moves, player, boards, legal_at, flipped_at, length = (
        games.moves,
        games.player,
        games.boards,
        games.legal,
        games.flipped,
        games.length,
    )
    moves.fill(-1)
    player.fill(-1)
    legal_at.fill(0)
    flipped_at.fill(0)
    length.fill(0)
    mover, opponent = start(n)
    turn = np.zeros(n, dtype=np.int8)  # 0: black to move
    over = np.zeros(n, dtype=bool)
    rows = np.arange(n)
    end = 60
    for t in range(60):
        boards[:, t] = _board(mover, opponent, turn)  # a finished game's discs no longer change
        legal = legal_moves(mover, opponent)
        stuck = legal == 0
        # A player without a move passes; if the other cannot move either, the game is over.
        if stuck.any():
            other = legal_moves(opponent[stuck], mover[stuck])
            idx = np.flatnonzero(stuck)
            over[idx[other == 0]] = True
            passing = idx[other != 0]
            mover[passing], opponent[passing] = opponent[passing], mover[passing]
            turn[passing] ^= 1
            legal[passing] = other[other != 0]
        live = ~over
        if live.any():
            going, choice = choose(t, rows[live], legal[live])
            over[rows[live][~going]] = True
            live = ~over
        if not live.any():
            end = t
            break
        lr = rows[live]
        move = choice.astype(np.uint64)
        flipped = flips(mover[lr], opponent[lr], choice)
        placed = np.left_shift(np.uint64(1), move)
        new_mover = mover[lr] | placed | flipped
        new_opponent = opponent[lr] & ~flipped
        moves[lr, t], player[lr, t] = choice, turn[lr]
        legal_at[lr, t], flipped_at[lr, t] = legal[live], flipped
        length[lr] += 1
        mover[lr], opponent[lr] = new_opponent, new_mover  # the other side moves next
        turn[lr] ^= 1
    final = _board(mover, opponent, turn)
    boards[:, end:] = final[:, None]
    games.score[:] = (final == 1).sum(1) - (final == 2).sum(1)


N_CTX = 59  # OthelloGPT's context: a model reads moves 1-59 and predicts moves 2-60
_TOKEN = np.zeros(64, dtype=np.int64)  # square -> token: 1-60 for the playable squares in order
_TOKEN[list(PLAYABLE)] = np.arange(1, 61)
TOKEN_NAMES = ("<pad>", *(square_name(s) for s in PLAYABLE))  # a vocabulary of 61


class SquareProperty(IntEnum):
    """The per-square label planes, in column order: plane ``p`` is columns ``64 p … 64 p + 63``."""

    MINE = 0  # a disc of the player who moves next
    THEIRS = 1  # a disc of the other player
    EMPTY = 2
    LEGAL = 3  # a square the next player may take
    FLIPPED = 4  # a disc this move flipped
    MOVE = 5  # the square this move took


LABEL_NAMES = tuple(f"{p.name.lower()}@{square_name(s)}" for p in SquareProperty for s in range(64))  # 384


@register_game
@dataclass(frozen=True)
class Othello(Game):
    """Othello on OthelloGPT's tokens: one per move, 1-60 for the playable squares in order (A1 = 1, …,
    H8 = 60, skipping the centre), 0 for padding; a context of :data:`N_CTX` moves. Labels follow the
    player who actually moves next: after a pass that is the side that just moved, where move-parity
    labels would swap mine and theirs."""

    name: ClassVar[str] = "othello"
    token_names: ClassVar[tuple[str, ...]] = TOKEN_NAMES
    label_names: ClassVar[tuple[str, ...]] = LABEL_NAMES
    Games: ClassVar[type] = Games
    board: ClassVar[Board] = Board(
        squares=tuple(square_name(s) for s in range(64)),
        classes=("mine", "theirs", "empty"),
        empty="empty",
        rows=tuple(tuple(range(8 * row, 8 * row + 8)) for row in range(8)),  # OthelloGPT's view
        row_names=tuple("ABCDEFGH"),
        column_names=tuple("12345678"),
    )
    n_ctx: ClassVar[int] = N_CTX

    def random_games(self, n: int, rng: np.random.Generator) -> Games:
        return random_games(n, rng)

    def tokenize(self, games: Games) -> np.ndarray:
        return np.where(games.moves >= 0, _TOKEN[np.clip(games.moves, 0, 63)], PAD)

    def detokenize(self, tokens: np.ndarray) -> Games:
        tokens = np.asarray(tokens)
        if tokens.ndim != 2 or tokens.shape[1] > 60 or tokens.size and (tokens.min() < 0 or tokens.max() > 60):
            raise ValueError(f"tokens must be [n, <= 60] indices into TOKEN_NAMES, got {tokens.shape} {tokens.dtype}")
        gaps = np.flatnonzero(((tokens[:, :-1] == PAD) & (tokens[:, 1:] != PAD)).any(1))[:1]
        for g in gaps:
            raise ValueError(f"game {g} has a move after padding: {tokens[g].tolist()}")
        squares = np.full((len(tokens), 60), -1, dtype=np.int64)
        squares[:, : tokens.shape[1]] = np.where(tokens != PAD, np.asarray(PLAYABLE)[np.maximum(tokens - 1, 0)], -1)
        return _replay(squares)

    def labels(self, games: Games) -> np.ndarray:
        """Per-token properties ``[n, 60, 384]`` (see :class:`SquareProperty`), each after that token's move
        and for the player who moves next, passes respected. When the game is over the opponent of the last
        mover is used (and nothing is legal)."""
        n = len(games)
        labels = np.empty((n, 60, len(SquareProperty), 64), dtype=bool)  # written in place: no temporaries
        starts = range(0, n, CHUNK)
        map_threads(lambda a: _fill_labels(select(games, slice(a, a + CHUNK)), labels[a : a + CHUNK]), starts)
        return labels.reshape(n, 60, -1)

    def legal_tokens(self, games: Games, n_ctx: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_ctx = self.check_context(n_ctx)
        g, t, square = np.nonzero(to_squares(games.legal[:, 1 : n_ctx + 1]))  # the next player's moves
        return g, t, _TOKEN[square]


def _fill_labels(games: Games, labels: np.ndarray) -> None:
    n = len(games)
    live = np.arange(60)[None, :] < games.length[:, None]
    following = np.concatenate([games.player[:, 1:], np.full((n, 1), -1, dtype=np.int8)], axis=1)
    nxt = np.where(following >= 0, following, 1 - games.player).astype(np.int8)  # 0 black, 1 white
    after = games.boards[:, 1:]  # [n, 60, 64]
    np.equal(after, (nxt + 1)[..., None], out=labels[:, :, SquareProperty.MINE])
    np.equal(after, (2 - nxt)[..., None], out=labels[:, :, SquareProperty.THEIRS])
    np.equal(after, 0, out=labels[:, :, SquareProperty.EMPTY])
    next_legal = np.concatenate([games.legal[:, 1:], np.zeros((n, 1), dtype=np.uint64)], axis=1)
    labels[:, :, SquareProperty.LEGAL] = to_squares(next_legal)
    labels[:, :, SquareProperty.FLIPPED] = to_squares(games.flipped)
    labels[:, :, SquareProperty.MOVE] = False
    rows, cols = np.nonzero(live)
    labels[rows, cols, SquareProperty.MOVE, games.moves[rows, cols]] = True
    labels[~live] = False


def _kth_bits() -> np.ndarray:
    """``[256, 8]``: the position of the k-th set bit of each byte value (0 where there is none)."""
    table = np.zeros((256, 8), dtype=np.int64)
    for value in range(256):
        bits = [i for i in range(8) if value >> i & 1]
        table[value, : len(bits)] = bits
    return table


_KTH_BIT = _kth_bits()


def _uniform_square(legal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly chosen set square per bitboard of ``legal [m]``: the k-th set bit for k uniform
    below the count, found byte by byte (8 columns, not 64)."""
    count = np.bitwise_count(legal)
    pick = (rng.random(len(legal)) * count).astype(np.int64)
    by_byte = legal.astype("<u8").view(np.uint8).reshape(-1, 8)  # byte j holds squares 8j .. 8j + 7
    per_byte = np.bitwise_count(by_byte).astype(np.int64)
    through = np.cumsum(per_byte, axis=1)  # set bits in bytes 0..j
    byte = (through <= pick[:, None]).sum(1)
    rows = np.arange(len(legal))
    before = through[rows, byte] - per_byte[rows, byte]
    return 8 * byte + _KTH_BIT[by_byte[rows, byte], pick - before]


def _board(mover: np.ndarray, opponent: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """``[n, 64]`` int8: 0 empty, 1 black, 2 white."""
    black = np.where(turn == 0, mover, opponent)
    white = np.where(turn == 0, opponent, mover)
    return to_squares(black).astype(np.int8) + 2 * to_squares(white).astype(np.int8)
