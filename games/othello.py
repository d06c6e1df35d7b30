"""Othello rules on bitboards, vectorised over a batch of games, on the standard 8 × 8 board or a smaller one.

A position is two ``uint64`` arrays, the discs of the player to move and of the opponent; bit ``8 * row +
col`` is the square in row ``row`` (A, B, … top to bottom) and column ``col`` (1, 2, …). An ``N × N`` board
(:class:`OthelloGeometry`) sits in the first ``N`` rows and columns of those bits and the rest stay empty,
so one engine plays every size. Everywhere else (moves, boards, labels, tokens) squares are numbered over
the board only, ``N * row + col`` from A1; on 8 × 8 the two numberings agree, and 27, 28, 35, 36 are the
centre. Black moves first from the standard start (on 8 × 8 D5 and E4 black, D4 and E5 white; the same
pattern in the centre of a smaller board). A player with no legal move passes; the game ends when neither
player can move.

Moves are found with shift-and-mask fills along the 8 directions (a line of opponent discs followed
by an empty square is a legal move; one closed by the mover's own disc is flipped), so each step costs
a few dozen array operations for the whole batch instead of a Python loop per game.

:class:`Othello` is the game as a token source (:class:`~games.protocol.Game`): OthelloGPT's tokens and
the board after every move, for the player who moves next; :class:`Othello6` is the same game on 6 × 6.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from typing import ClassVar

import numpy as np

from games.bitboards import FULL as _FULL
from games.bitboards import bit, to_squares
from games.protocol import PAD, Board, Game, register_game, select
from groundtruth.checks import check_int
from groundtruth.threads import map_threads

_COL_1 = np.uint64(0x0101_0101_0101_0101)  # column 1 (bit 0 of each row)
_COL_8 = np.uint64(0x8080_8080_8080_8080)  # column 8
_NOT_COL_1 = _FULL ^ _COL_1
_NOT_COL_8 = _FULL ^ _COL_8

# (shift, left?, mask applied after the shift): a left shift by 1 moves a disc one column right, so
# discs arriving in column 1 wrapped around from column 8 and are masked out (and so on). On a board smaller
# than 8 × 8 a disc can also leave the board into the unused columns or rows; no opponent disc, mover's disc
# or empty square of the board is there, so such a line goes no further.
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


def _shift(bits: np.ndarray, step: int, left: bool, mask: np.uint64) -> np.ndarray:
    moved = np.left_shift(bits, np.uint64(step)) if left else np.right_shift(bits, np.uint64(step))
    return moved & mask


def square_name(square: int, size: int = 8) -> str:
    """The name of board square ``square`` (row-major from A1) on a ``size × size`` board: ``0`` → ``"A1"``,
    ``63`` → ``"H8"`` on 8 × 8, ``35`` → ``"F6"`` on 6 × 6."""
    return "ABCDEFGH"[square // size] + str(square % size + 1)


class SquareProperty(IntEnum):
    """The per-square label planes, in column order: on a board of ``S`` squares plane ``p`` is columns
    ``S p … S p + S - 1``."""

    MINE = 0  # a disc of the player who moves next
    THEIRS = 1  # a disc of the other player
    EMPTY = 2
    LEGAL = 3  # a square the next player may take
    FLIPPED = 4  # a disc this move flipped
    MOVE = 5  # the square this move took


@dataclass(frozen=True)
class OthelloGeometry:
    """A ``size × size`` Othello board and everything that depends on its size, derived here once: squares,
    centre, moves, OthelloGPT-style tokens and context, label names and the :class:`~games.protocol.Board`.
    ``size`` is even (a centre of 2 × 2) and at most 8 (the board fits one ``uint64``)."""

    size: int

    def __post_init__(self) -> None:
        check_int("size", self.size, 4, 8)
        if self.size % 2:
            raise ValueError(f"size must be even (the start fills the 2 x 2 centre), got {self.size}")

    @cached_property
    def n_squares(self) -> int:
        """``S``: the width of boards and of each label plane."""
        return self.size * self.size

    @cached_property
    def n_moves(self) -> int:
        """The longest game: every square but the four of the start is taken once."""
        return self.n_squares - 4

    @cached_property
    def n_ctx(self) -> int:
        """OthelloGPT's context: a model reads moves 1 … M - 1 and predicts moves 2 … M (M = :attr:`n_moves`)."""
        return self.n_moves - 1

    @cached_property
    def bits(self) -> np.ndarray:
        """``[S]`` the bitboard bit of each board square."""
        squares = np.arange(self.n_squares)
        return _read_only(8 * (squares // self.size) + squares % self.size)

    @cached_property
    def square_of_bit(self) -> np.ndarray:
        """``[64]`` the board square of each bitboard bit, -1 off the board."""
        table = np.full(64, -1, dtype=np.int64)
        table[self.bits] = np.arange(self.n_squares)
        return _read_only(table)

    @cached_property
    def mask(self) -> np.uint64:
        """The bits of the board's squares."""
        return np.bitwise_or.reduce(bit(self.bits))

    @cached_property
    def centre(self) -> tuple[int, ...]:
        """The four squares of the start, which no move takes."""
        c = self.size // 2
        return tuple(self.size * row + col for row in (c - 1, c) for col in (c - 1, c))

    @cached_property
    def playable(self) -> tuple[int, ...]:
        """The squares a move can take, in order: token ``i`` is ``playable[i - 1]``."""
        return tuple(s for s in range(self.n_squares) if s not in self.centre)

    @cached_property
    def tokens(self) -> np.ndarray:
        """``[S]`` square → token: 1 … M for the playable squares in order, 0 (:data:`PAD`) on the centre."""
        table = np.zeros(self.n_squares, dtype=np.int64)
        table[list(self.playable)] = np.arange(1, self.n_moves + 1)
        return _read_only(table)

    @cached_property
    def square_names(self) -> tuple[str, ...]:
        """``A1`` … in square order: how labels, tokens and error messages name squares."""
        return tuple(square_name(s, self.size) for s in range(self.n_squares))

    @cached_property
    def token_names(self) -> tuple[str, ...]:
        """The vocabulary, ``M + 1`` tokens: padding, then the playable squares' names."""
        return ("<pad>", *(self.square_names[s] for s in self.playable))

    @cached_property
    def label_names(self) -> tuple[str, ...]:
        """``property@square`` for every :class:`SquareProperty` plane and square."""
        return tuple(f"{p.name.lower()}@{name}" for p in SquareProperty for name in self.square_names)

    @cached_property
    def board(self) -> Board:
        """What the board metrics and figures read: the squares, mine/theirs/empty, rows as drawn."""
        n = self.size
        return Board(
            squares=self.square_names,
            classes=("mine", "theirs", "empty"),
            empty="empty",
            rows=tuple(tuple(range(n * row, n * row + n)) for row in range(n)),  # OthelloGPT's view
            row_names=tuple("ABCDEFGH"[:n]),
            column_names=tuple("12345678"[:n]),
        )

    def squares(self, bitboards: np.ndarray) -> np.ndarray:
        """``[..., S]`` booleans, the board's squares of ``[...]`` bitboards (a view on 8 × 8)."""
        every = to_squares(bitboards).reshape(*bitboards.shape, 8, 8)
        return every[..., : self.size, : self.size].reshape(*bitboards.shape, self.n_squares)


def _read_only(table: np.ndarray) -> np.ndarray:
    """A geometry's tables are shared by every game of its size: nothing may write to them."""
    table.setflags(write=False)
    return table


STANDARD = OthelloGeometry(8)  # OthelloGPT's board: the engine's functions play it unless given another


def start(n: int, geometry: OthelloGeometry = STANDARD) -> tuple[np.ndarray, np.ndarray]:
    """``n`` boards at the start, black to move: (mover, opponent) bitboards."""
    top_left, top_right, bottom_left, bottom_right = geometry.bits[list(geometry.centre)]
    black = np.uint64((1 << int(top_right)) | (1 << int(bottom_left)))  # D5 and E4 on 8 x 8
    white = np.uint64((1 << int(top_left)) | (1 << int(bottom_right)))  # D4 and E5
    return np.full(n, black, dtype=np.uint64), np.full(n, white, dtype=np.uint64)


def legal_moves(mover: np.ndarray, opponent: np.ndarray, geometry: OthelloGeometry = STANDARD) -> np.ndarray:
    """Bitboards of the squares the mover may play."""
    empty = ~(mover | opponent) & geometry.mask
    legal = np.zeros_like(mover)
    for step, left, mask in _DIRECTIONS:
        run = _shift(mover, step, left, mask) & opponent
        for _ in range(geometry.size - 3):  # a line holds at most size - 2 opponent discs
            run |= _shift(run, step, left, mask) & opponent
        legal |= _shift(run, step, left, mask) & empty
    return legal


def flips(
    mover: np.ndarray, opponent: np.ndarray, move: np.ndarray, geometry: OthelloGeometry = STANDARD
) -> np.ndarray:
    """Bitboards of the opponent discs that playing ``move`` (board squares) flips; 0 for an illegal move."""
    placed = bit(geometry.bits[move])
    flipped = np.zeros_like(mover)
    for step, left, mask in _DIRECTIONS:
        run = _shift(placed, step, left, mask) & opponent
        for _ in range(geometry.size - 3):
            run |= _shift(run, step, left, mask) & opponent
        closed = (_shift(run, step, left, mask) & mover) != 0
        flipped |= np.where(closed, run, np.uint64(0))
    occupied = (placed & (mover | opponent)) != 0
    return np.where(occupied, np.uint64(0), flipped)


@dataclass(frozen=True)
class Games:
    """A batch of finished games, one row per game, padded after its last move; on a board of ``S`` squares
    and at most ``M`` moves (:class:`OthelloGeometry`; 64 and 60 on 8 × 8):

    ``moves [n, M]``: squares played in order (passes are not moves; -1 after the end).
    ``player [n, M]``: who played each move (0 black, 1 white; -1 after the end), so a pass shows as
    the same player moving twice in a row. ``boards [n, M + 1, S]``: the board before each move and after
    the last (0 empty, 1 black, 2 white); rows after the end repeat the final board.
    ``legal [n, M]`` and ``flipped [n, M]``: bitboards of the moves open to each move's player and of
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


def random_games(n: int, rng: np.random.Generator, geometry: OthelloGeometry = STANDARD) -> Games:
    """``n`` games of uniformly random legal moves (the OthelloGPT synthetic dataset's policy) on ``geometry``'s board.

    Games are played in chunks of :data:`CHUNK`, each from its own generator seeded from ``rng``, on
    torch's threads (NumPy releases the GIL): the same games on any number of threads.
    """
    check_int("n", n)
    starts = range(0, n, CHUNK)
    seeds = rng.integers(0, 2**63 - 1, size=len(starts)).tolist()
    games = _empty(n, geometry)  # every field is written by _play, chunk by chunk
    # Each chunk is played into its rows of `games`: concatenating chunks afterwards would run on one thread.
    map_threads(
        lambda a, seed: _play(select(games, slice(a, a + CHUNK)), _uniform_play(seed, geometry), geometry),
        starts,
        seeds,
    )
    return games


def _uniform_play(seed: int, geometry: OthelloGeometry) -> Callable:
    """A chooser for :func:`_play`: every live game goes on with a uniformly random legal move."""
    rng = np.random.default_rng(seed)
    to_square = geometry.square_of_bit
    return lambda t, rows, legal: (np.ones(len(rows), dtype=bool), to_square[_uniform_square(legal, rng)])


def _empty(n: int, geometry: OthelloGeometry) -> Games:
    """A record of ``n`` games with every field allocated and none written."""
    m = geometry.n_moves
    return Games(
        moves=np.empty((n, m), dtype=np.int64),
        player=np.empty((n, m), dtype=np.int8),
        boards=np.empty((n, m + 1, geometry.n_squares), dtype=np.int8),
        legal=np.empty((n, m), dtype=np.uint64),
        flipped=np.empty((n, m), dtype=np.uint64),
        length=np.empty(n, dtype=np.int64),
        score=np.empty(n, dtype=np.int64),
    )


def _replay(squares: np.ndarray, geometry: OthelloGeometry) -> Games:
    """The games whose moves are ``squares [n, M]`` (-1 after each game's last move), passes implied.
    Raises ``ValueError`` naming the first move that is illegal or follows the end of its game."""
    games = _empty(len(squares), geometry)

    def given(t: int, rows: np.ndarray, legal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        want = squares[rows, t]
        going = want >= 0
        bad = going & ((legal >> geometry.bits[np.maximum(want, 0)].astype(np.uint64)) & np.uint64(1) == 0)
        for i in np.flatnonzero(bad)[:1]:
            name = geometry.square_names[want[i]]
            raise ValueError(f"move {t} of game {rows[i]} ({name}) is not a legal move there")
        return going, want[going]

    _play(games, given, geometry)
    over = np.flatnonzero((squares >= 0).sum(1) > games.length)[:1]
    for g in over:
        raise ValueError(f"game {g} is over after move {games.length[g]}, but more moves follow")
    return games


def _play(games: Games, choose: Callable, geometry: OthelloGeometry) -> None:
    """Play the rows of ``games`` from the start to the end of each game, writing every field in place.
    ``choose(t, rows, legal)`` gets the live games' rows and legal-move bitboards at move ``t`` and returns
    which of them go on (the others end there) and the board square each one that goes on plays."""
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
    mover, opponent = start(n, geometry)
    turn = np.zeros(n, dtype=np.int8)  # 0: black to move
    over = np.zeros(n, dtype=bool)
    rows = np.arange(n)
    end = geometry.n_moves
    for t in range(geometry.n_moves):
        boards[:, t] = _board(mover, opponent, turn, geometry)  # a finished game's discs no longer change
        legal = legal_moves(mover, opponent, geometry)
        stuck = legal == 0
        # A player without a move passes; if the other cannot move either, the game is over.
        if stuck.any():
            other = legal_moves(opponent[stuck], mover[stuck], geometry)
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
        flipped = flips(mover[lr], opponent[lr], choice, geometry)
        placed = bit(geometry.bits[choice])
        new_mover = mover[lr] | placed | flipped
        new_opponent = opponent[lr] & ~flipped
        moves[lr, t], player[lr, t] = choice, turn[lr]
        legal_at[lr, t], flipped_at[lr, t] = legal[live], flipped
        length[lr] += 1
        mover[lr], opponent[lr] = new_opponent, new_mover  # the other side moves next
        turn[lr] ^= 1
    final = _board(mover, opponent, turn, geometry)
    boards[:, end:] = final[:, None]
    games.score[:] = (final == 1).sum(1) - (final == 2).sum(1)


@register_game
@dataclass(frozen=True)
class Othello(Game):
    """Othello on OthelloGPT's tokens: one per move, 1-60 for the playable squares in order (A1 = 1, …,
    H8 = 60, skipping the centre), 0 for padding; a context of 59 moves. Labels follow the player who
    actually moves next: after a pass that is the side that just moved, where move-parity labels would swap
    mine and theirs. Everything that depends on the board's size comes from :attr:`geometry`, so a subclass
    that declares another (:class:`Othello6`) is the same game on that board."""

    name: ClassVar[str] = "othello"
    geometry: ClassVar[OthelloGeometry] = STANDARD
    Games: ClassVar[type] = Games

    @property
    def token_names(self) -> tuple[str, ...]:
        return self.geometry.token_names

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.geometry.label_names

    @property
    def board(self) -> Board:
        return self.geometry.board

    @property
    def n_ctx(self) -> int:
        return self.geometry.n_ctx

    def random_games(self, n: int, rng: np.random.Generator) -> Games:
        return random_games(n, rng, self.geometry)

    def tokenize(self, games: Games) -> np.ndarray:
        return np.where(games.moves >= 0, self.geometry.tokens[np.maximum(games.moves, 0)], PAD)

    def detokenize(self, tokens: np.ndarray) -> Games:
        tokens, m = np.asarray(tokens), self.geometry.n_moves
        if tokens.ndim != 2 or tokens.shape[1] > m or tokens.size and (tokens.min() < 0 or tokens.max() > m):
            raise ValueError(
                f"tokens must be [n, <= {m}] indices into {self.name}'s token_names, got {tokens.shape} {tokens.dtype}"
            )
        gaps = np.flatnonzero(((tokens[:, :-1] == PAD) & (tokens[:, 1:] != PAD)).any(1))[:1]
        for g in gaps:
            raise ValueError(f"game {g} has a move after padding: {tokens[g].tolist()}")
        squares = np.full((len(tokens), m), -1, dtype=np.int64)
        playable = np.asarray(self.geometry.playable)
        squares[:, : tokens.shape[1]] = np.where(tokens != PAD, playable[np.maximum(tokens - 1, 0)], -1)
        return _replay(squares, self.geometry)

    def labels(self, games: Games) -> np.ndarray:
        """Per-token properties ``[n, M, 6 S]`` (``[n, 60, 384]`` on 8 × 8; see :class:`SquareProperty`),
        each after that token's move and for the player who moves next, passes respected. When the game is
        over the opponent of the last mover is used (and nothing is legal)."""
        n, m, s = len(games), self.geometry.n_moves, self.geometry.n_squares
        labels = np.empty((n, m, len(SquareProperty), s), dtype=bool)  # written in place: no temporaries
        starts = range(0, n, CHUNK)
        map_threads(
            lambda a: _fill_labels(select(games, slice(a, a + CHUNK)), labels[a : a + CHUNK], self.geometry), starts
        )
        return labels.reshape(n, m, -1)

    def legal_tokens(self, games: Games, n_ctx: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_ctx = self.check_context(n_ctx)
        g, t, square = np.nonzero(self.geometry.squares(games.legal[:, 1 : n_ctx + 1]))  # the next player's moves
        return g, t, self.geometry.tokens[square]


@register_game
@dataclass(frozen=True)
class Othello6(Othello):
    """Othello on a 6 × 6 board (A1 … F6): at most 32 moves, tokens 1-32, a context of 31 moves. A smaller
    world than OthelloGPT's, for models and SAEs that train in minutes on a CPU."""

    name: ClassVar[str] = "othello6"
    geometry: ClassVar[OthelloGeometry] = OthelloGeometry(6)


def _fill_labels(games: Games, labels: np.ndarray, geometry: OthelloGeometry) -> None:
    n, m = len(games), geometry.n_moves
    live = np.arange(m)[None, :] < games.length[:, None]
    following = np.concatenate([games.player[:, 1:], np.full((n, 1), -1, dtype=np.int8)], axis=1)
    nxt = np.where(following >= 0, following, 1 - games.player).astype(np.int8)  # 0 black, 1 white
    after = games.boards[:, 1:]  # [n, M, S]
    np.equal(after, (nxt + 1)[..., None], out=labels[:, :, SquareProperty.MINE])
    np.equal(after, (2 - nxt)[..., None], out=labels[:, :, SquareProperty.THEIRS])
    np.equal(after, 0, out=labels[:, :, SquareProperty.EMPTY])
    next_legal = np.concatenate([games.legal[:, 1:], np.zeros((n, 1), dtype=np.uint64)], axis=1)
    labels[:, :, SquareProperty.LEGAL] = geometry.squares(next_legal)
    labels[:, :, SquareProperty.FLIPPED] = geometry.squares(games.flipped)
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


def _board(mover: np.ndarray, opponent: np.ndarray, turn: np.ndarray, geometry: OthelloGeometry) -> np.ndarray:
    """``[n, S]`` int8: 0 empty, 1 black, 2 white."""
    black = np.where(turn == 0, mover, opponent)
    white = np.where(turn == 0, opponent, mover)
    return geometry.squares(black).astype(np.int8) + 2 * geometry.squares(white).astype(np.int8)
