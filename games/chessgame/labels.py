"""Per-position chess labels: the piece on every square and the properties of the position, for the side
to move there. Columns are named ``property@square`` (``white_knight@f3``, ``legal@e4``) and then the
position's flags (``check``, ``white_to_move``, the castling rights).
"""

from __future__ import annotations

from enum import IntEnum, auto

import numpy as np

from games.bitboards import to_squares
from games.chessgame.position import BLACK, KING, PAWN, PIECE_NAMES, START, square_name
from games.chessgame.rules import CHUNK, Games
from games.protocol import select
from groundtruth.threads import map_threads

PIECE_CLASSES = ("blank",) + tuple(f"{c}_{p}" for c in ("white", "black") for p in PIECE_NAMES)  # mailbox order


class SquareProperty(IntEnum):
    """The per-square label planes that follow the 13 piece classes (whose planes are their mailbox
    codes), in column order: plane ``p`` is columns ``64 p … 64 p + 63``, one per square."""

    INITIAL = len(PIECE_CLASSES)  # the square holds its starting piece
    MINE = auto()  # a piece of the side to move
    THEIRS = auto()  # a piece of the other side
    LEGAL = auto()  # the destination of a legal move
    MINE_ATTACKS = auto()  # attacked by the side to move
    THEIRS_ATTACKS = auto()  # attacked by the other side
    PINNED = auto()  # a piece of the side to move pinned to its king
    EN_PASSANT = auto()  # a legal en-passant capture lands there


class Flag(IntEnum):
    """The per-position labels after the square planes: flag ``f`` is column ``N_SQUARE_COLUMNS + f``."""

    CHECK = 0
    WHITE_TO_MOVE = auto()
    CASTLE_WHITE_KING = auto()  # the castling rights, in the order of their Castling bits
    CASTLE_WHITE_QUEEN = auto()
    CASTLE_BLACK_KING = auto()
    CASTLE_BLACK_QUEEN = auto()


SQUARE_PROPERTIES = PIECE_CLASSES + tuple(p.name.lower() for p in SquareProperty)
N_SQUARE_COLUMNS = 64 * len(SQUARE_PROPERTIES)
LABEL_NAMES = tuple(f"{p}@{square_name(s)}" for p in SQUARE_PROPERTIES for s in range(64))
LABEL_NAMES += tuple(f.name.lower() for f in Flag)  # 1,350 names


def position_labels(games: Games) -> np.ndarray:
    """Labels ``[n, T + 1, 1350]`` (bool, names in :data:`LABEL_NAMES`) of the position after each ply,
    for the side to move there; all False after the end of a game."""
    n, cols = games.boards.shape[:2]
    out = np.empty((n, cols, len(LABEL_NAMES)), dtype=bool)
    map_threads(lambda a: _fill(select(games, slice(a, a + CHUNK)), out[a : a + CHUNK]), range(0, n, CHUNK))
    return out


def _fill(games: Games, labels: np.ndarray) -> None:
    n, cols = games.boards.shape[:2]
    squares = labels[:, :, :N_SQUARE_COLUMNS].reshape(n, cols, len(SQUARE_PROPERTIES), 64)
    board = games.boards
    pieces = np.arange(len(PIECE_CLASSES), dtype=np.int8)
    np.equal(board[:, :, None, :], pieces[:, None], out=squares[:, :, : len(PIECE_CLASSES)])
    np.equal(board, START, out=squares[:, :, SquareProperty.INITIAL])
    white = (np.arange(cols) % 2 == 0)[None, :] & np.ones((n, 1), dtype=bool)
    white_pieces = (board >= PAWN) & (board <= KING)
    black_pieces = board >= PAWN + BLACK
    w = white[..., None]
    squares[:, :, SquareProperty.MINE] = np.where(w, white_pieces, black_pieces)
    squares[:, :, SquareProperty.THEIRS] = np.where(w, black_pieces, white_pieces)
    squares[:, :, SquareProperty.LEGAL] = to_squares(games.legal)
    by = to_squares(games.attacks)  # [n, cols, 2, 64]
    squares[:, :, SquareProperty.MINE_ATTACKS] = np.where(w, by[:, :, 0], by[:, :, 1])
    squares[:, :, SquareProperty.THEIRS_ATTACKS] = np.where(w, by[:, :, 1], by[:, :, 0])
    squares[:, :, SquareProperty.PINNED] = to_squares(games.pinned)
    np.equal(games.en_passant[..., None], np.arange(64, dtype=np.int8), out=squares[:, :, SquareProperty.EN_PASSANT])
    flags = labels[:, :, N_SQUARE_COLUMNS:]
    flags[:, :, Flag.CHECK] = games.check
    flags[:, :, Flag.WHITE_TO_MOVE] = white
    flags[:, :, Flag.CASTLE_WHITE_KING :] = (games.castling[..., None] >> np.arange(4, dtype=np.uint8)) & 1
    labels[np.arange(cols)[None, :] > games.length[:, None]] = False
