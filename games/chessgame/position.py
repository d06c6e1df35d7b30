"""Chess positions on bitboards, vectorised over a batch: every legal move and the properties the labels
are made of.

Squares follow python-chess: ``a1 = 0, b1 = 1, ..., h8 = 63`` (file + 8 × rank). A position is a
mailbox ``[n, 64]`` int8 (0 empty, 1–6 white pawn, knight, bishop, rook, queen, king, 7–12 the
black pieces in the same order), the side to move, castling rights (:class:`Castling` bits) and the
en-passant square.

:func:`analyse` turns the mailboxes into piece bitboards and finds all legal moves at once: attacks come
from shift-and-mask fills (Kogge–Stone fills for sliders), moves are restricted by the check-evasion mask
and by pin lines, the king avoids squares the opponent attacks with the king lifted off the board, and
en-passant captures are tested by making them. The tests compare every position with python-chess.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

import numpy as np

from games.bitboards import FULL, bit, from_squares, popcount, to_squares

_ZERO = np.uint64(0)
_FILE_A = np.uint64(0x0101_0101_0101_0101)
_FILE_B = _FILE_A << np.uint64(1)
_FILE_G = _FILE_A << np.uint64(6)
_FILE_H = _FILE_A << np.uint64(7)
_NOT_A, _NOT_H = FULL ^ _FILE_A, FULL ^ _FILE_H
_NOT_AB, _NOT_GH = FULL ^ (_FILE_A | _FILE_B), FULL ^ (_FILE_G | _FILE_H)
_RANK = [np.uint64(0xFF) << np.uint64(8 * r) for r in range(8)]

# (signed shift, mask of squares a step may land on): a step east cannot land on file a, and so on.
_ORTH = ((8, FULL), (-8, FULL), (1, _NOT_A), (-1, _NOT_H))
_DIAG = ((9, _NOT_A), (7, _NOT_H), (-7, _NOT_A), (-9, _NOT_H))
_KNIGHT = ((17, _NOT_A), (15, _NOT_H), (10, _NOT_AB), (6, _NOT_GH), (-6, _NOT_AB), (-10, _NOT_GH), (-15, _NOT_A))
_KNIGHT += ((-17, _NOT_H),)
_PAWN_CAPTURES = (((9, _NOT_A), (7, _NOT_H)), ((-7, _NOT_A), (-9, _NOT_H)))  # white, black

PAWN, KNIGHT, BISHOP, ROOK, QUEEN, KING = range(1, 7)  # python-chess's piece types
PIECE_NAMES = ("pawn", "knight", "bishop", "rook", "queen", "king")
BLACK = 6  # a mailbox holds a white piece as its type, a black one as its type + BLACK
START = np.zeros(64, dtype=np.int8)
START[:8] = [ROOK, KNIGHT, BISHOP, QUEEN, KING, BISHOP, KNIGHT, ROOK]
START[8:16] = PAWN
START[48:56] = PAWN + BLACK
START[56:] = START[:8] + BLACK


class Castling(IntFlag):
    """Castling rights, one bit each; a position's rights are their union (``ALL`` at the start)."""

    WHITE_KING = 1
    WHITE_QUEEN = 2
    BLACK_KING = 4
    BLACK_QUEEN = 8
    ALL = 15


# Each right with the corner its rook starts on (h1, a1, h8, a8).
_ROOK_CORNERS = (
    (Castling.WHITE_KING, 7),
    (Castling.WHITE_QUEEN, 0),
    (Castling.BLACK_KING, 63),
    (Castling.BLACK_QUEEN, 56),
)


def _shift(bits: np.ndarray, step: int) -> np.ndarray:
    return np.left_shift(bits, np.uint64(step)) if step > 0 else np.right_shift(bits, np.uint64(-step))


def _steps(bits: np.ndarray, steps: tuple) -> np.ndarray:
    """Union of one step of every piece in ``bits`` along each of ``steps``."""
    out = np.zeros_like(bits)
    for step, mask in steps:
        out |= _shift(bits, step) & mask
    return out


def _ray(bits: np.ndarray, occupied: np.ndarray, step: int, mask: np.uint64) -> np.ndarray:
    """Squares a slider on ``bits`` attacks along one direction: up to and including the first occupied
    square (a Kogge–Stone occluded fill: three doubling steps instead of seven single ones)."""
    free = ~occupied & mask
    bits = bits | (free & _shift(bits, step))
    free &= _shift(free, step)
    bits |= free & _shift(bits, 2 * step)
    free &= _shift(free, 2 * step)
    bits |= free & _shift(bits, 4 * step)
    return _shift(bits, step) & mask


def _slides(bits: np.ndarray, occupied: np.ndarray, directions: tuple) -> np.ndarray:
    out = np.zeros_like(bits)
    for step, mask in directions:
        out |= _ray(bits, occupied, step, mask)
    return out


def _pawn_attacks(pawns: np.ndarray, white: np.ndarray) -> np.ndarray:
    """Squares attacked by ``pawns`` of white (``white`` True) or black."""
    return np.where(white, _steps(pawns, _PAWN_CAPTURES[0]), _steps(pawns, _PAWN_CAPTURES[1]))


def attacks(pieces: np.ndarray, occupied: np.ndarray, white: np.ndarray) -> np.ndarray:
    """Squares attacked by one side's ``pieces [n, 6]`` (pawn … king bitboards) on ``occupied``."""
    pawns, knights, bishops, rooks, queens, kings = (pieces[:, i] for i in range(6))
    out = _pawn_attacks(pawns, white) | _steps(knights, _KNIGHT) | _steps(kings, _ORTH + _DIAG)
    return out | _slides(bishops | queens, occupied, _DIAG) | _slides(rooks | queens, occupied, _ORTH)


def bitboards(board: np.ndarray) -> np.ndarray:
    """``[n, 2, 6]`` bitboards (white/black × pawn … king) of mailboxes ``[n, 64]``."""
    codes = np.arange(1, 13, dtype=np.int8)
    return from_squares(board[:, None, :] == codes[:, None]).reshape(-1, 2, 6)


def square_name(square: int) -> str:
    """``0`` → ``"a1"``, ``63`` → ``"h8"`` (python-chess's names)."""
    return "abcdefgh"[square % 8] + str(square // 8 + 1)


_PROMOTIONS = " pnbrq"  # the UCI letter of each promotion piece type (0: none)


def move_code(uci: str) -> int:
    """``e7e8q`` → ``src + 64 × dst + 4096 × promotion``, the layout of a game record's moves."""
    src, dst = ("abcdefgh".index(uci[i]) + 8 * (int(uci[i + 1]) - 1) for i in (0, 2))
    return src + 64 * dst + 4096 * _PROMOTIONS.index(uci[4:] or " ")


def move_uci(code: int) -> str:
    """The UCI text of a move code; the inverse of :func:`move_code`."""
    src, dst, promotion = code % 64, code // 64 % 64, code // 4096
    return square_name(src) + square_name(dst) + _PROMOTIONS[promotion].strip()


@dataclass(frozen=True)
class Moves:
    """Every legal move of a batch of positions, one row per move, grouped by position.

    ``game`` indexes the position, ``src``/``dst`` are squares, ``promotion`` a piece type (0: none),
    ``capture`` whether the move takes a piece (en passant included).
    """

    game: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    promotion: np.ndarray
    capture: np.ndarray


@dataclass(frozen=True)
class Analysis:
    """A batch of positions with their legal moves and the properties the labels are made of.

    Bitboards: ``legal`` (destinations of legal moves), ``pinned`` (the mover's pieces pinned to its
    king), ``attacks [n, 2]`` (squares white and black attack, as python-chess's ``attacks_mask``).
    ``check``: the mover is in check. ``en_passant``: the en-passant square when a legal en-passant
    capture exists, else -1 (python-chess's ``ep_square`` after ``has_legal_en_passant``).
    """

    moves: Moves
    count: np.ndarray
    legal: np.ndarray
    pinned: np.ndarray
    attacks: np.ndarray
    check: np.ndarray
    en_passant: np.ndarray


def analyse(board: np.ndarray, white: np.ndarray, castling: np.ndarray, ep: np.ndarray) -> Analysis:
    """Legal moves and properties of positions: mailboxes ``[n, 64]``, ``white [n]`` (white to move),
    ``castling [n]`` rights and ``ep [n]`` (the square a pawn passed over on its last double step, or -1).
    """
    n = len(board)
    bbs = bitboards(board)
    ours = np.where(white[:, None], bbs[:, 0], bbs[:, 1])
    theirs = np.where(white[:, None], bbs[:, 1], bbs[:, 0])
    own = np.bitwise_or.reduce(ours, axis=1)
    opp = np.bitwise_or.reduce(theirs, axis=1)
    occupied = own | opp
    king = ours[:, 5]
    black = ~white
    by_white = attacks(bbs[:, 0], occupied, np.ones(n, bool))
    attacked = np.stack([by_white, attacks(bbs[:, 1], occupied, np.zeros(n, bool))], 1)
    danger = attacks(theirs, occupied & ~king, black)  # where the king may not step: lifted off, x-rays count

    checkers = (_steps(king, _KNIGHT) & theirs[:, 1]) | (_pawn_attacks(king, white) & theirs[:, 0])
    between = np.zeros(n, dtype=np.uint64)
    pinned = np.zeros(n, dtype=np.uint64)
    pin_lines = []
    for directions, sliders in ((_ORTH, theirs[:, 3] | theirs[:, 4]), (_DIAG, theirs[:, 2] | theirs[:, 4])):
        for step, mask in directions:
            ray = _ray(king, occupied, step, mask)
            checker = ray & sliders
            checkers |= checker
            between |= np.where(checker != 0, ray & ~checker, _ZERO)
            blocker = ray & own
            beyond = _ray(king, occupied & ~blocker, step, mask)
            pin = np.where((blocker != 0) & ((beyond & sliders) != 0), blocker, _ZERO)
            pinned |= pin
            pin_lines.append((pin, beyond))
    n_checks = popcount(checkers)
    evasion = np.where(n_checks == 0, FULL, np.where(n_checks == 1, checkers | between, _ZERO))

    # Every piece but the king, one row each.
    game, src = np.nonzero(to_squares(own & ~king))
    piece = bit(src)
    kind = board[game, src] - np.where(white[game], 0, BLACK)
    w, occ, mine, other = white[game], occupied[game], own[game], opp[game]
    reach = _steps(np.where(kind == KNIGHT, piece, _ZERO), _KNIGHT)
    reach |= _slides(np.where((kind == BISHOP) | (kind == QUEEN), piece, _ZERO), occ, _DIAG)
    reach |= _slides(np.where((kind == ROOK) | (kind == QUEEN), piece, _ZERO), occ, _ORTH)
    pawns = np.where(kind == PAWN, piece, _ZERO)
    empty = ~occ
    one = np.where(w, pawns << np.uint64(8), pawns >> np.uint64(8)) & empty
    two = np.where(w, (one & _RANK[2]) << np.uint64(8), (one & _RANK[5]) >> np.uint64(8)) & empty
    pawn_hits = _pawn_attacks(pawns, w)
    targets = (reach & ~mine) | one | two | (pawn_hits & other)
    restrict = evasion[game]
    for pin, line in pin_lines:
        restrict = np.where((piece & pin[game]) != 0, restrict & line[game], restrict)
    targets &= restrict

    # En passant: rare, so each candidate is tested by making it (it can uncover a check on the rank).
    ep_bit = np.where(ep >= 0, bit(np.maximum(ep, 0)), _ZERO)
    cand = np.flatnonzero((pawn_hits & ep_bit[game]) != 0)
    if cand.size:
        g = game[cand]
        lands = ep_bit[g]
        taken = np.where(white[g], lands >> np.uint64(8), lands << np.uint64(8))
        occ_after = (occupied[g] ^ piece[cand] ^ taken) | lands
        t = theirs[g]
        k = king[g]
        hit = (_steps(k, _KNIGHT) & t[:, 1]) | (_pawn_attacks(k, white[g]) & t[:, 0] & ~taken)
        hit |= _slides(k, occ_after, _ORTH) & (t[:, 3] | t[:, 4])
        hit |= _slides(k, occ_after, _DIAG) & (t[:, 2] | t[:, 4])
        targets[cand[hit == 0]] |= lands[hit == 0]
    legal_ep = np.zeros(n, dtype=bool)
    legal_ep[game[(kind == PAWN) & ((targets & ep_bit[game]) != 0)]] = True

    # The king: safe squares, and castling through squares nobody attacks.
    king_sq = np.flatnonzero(to_squares(king))  # one king per position, in game order
    king_moves = _steps(king, _ORTH + _DIAG) & ~own & ~danger
    base = np.where(white, 0, 56)
    rights = castling >> np.where(white, 0, 2)  # the mover's rights in white's bits
    safe = n_checks == 0
    home = (king & bit(base + 4)) != 0
    sides = ((Castling.WHITE_KING, 7, (5, 6), (5, 6), 6), (Castling.WHITE_QUEEN, 0, (1, 2, 3), (2, 3), 2))
    for right, rook, path, walk, dst in sides:  # squares counted from the mover's a-file corner
        clear = safe & home & ((rights & right) != 0) & ((ours[:, 3] & bit(base + rook)) != 0)
        for s in path:
            clear &= (occupied & bit(base + s)) == 0
        for s in walk:
            clear &= (danger & bit(base + s)) == 0
        king_moves |= np.where(clear, bit(base + dst), _ZERO)

    rows = np.concatenate([targets, king_moves])
    row_game = np.concatenate([game, np.arange(n)])
    row_src = np.concatenate([src, king_sq % 64])
    row_pawn = np.concatenate([kind == PAWN, np.zeros(n, bool)])
    r, dst = np.nonzero(to_squares(rows))
    g, s, pawn = row_game[r], row_src[r], row_pawn[r]
    capture = (to_squares(opp)[g, dst]) | (pawn & (dst % 8 != s % 8))
    promote = pawn & ((dst < 8) | (dst >= 56))
    # A promotion is four moves: to knight, bishop, rook and queen.
    times = np.where(promote, 4, 1)
    order = np.argsort(np.repeat(g, times), kind="stable")
    promotion = np.where(np.repeat(promote, times), _cycle(times), 0)
    moves = Moves(
        *(np.repeat(a, times)[order] for a in (g, s, dst)), promotion[order], np.repeat(capture, times)[order]
    )
    count = np.bincount(moves.game, minlength=n)
    legal = from_squares(_scatter(n, g, dst))
    return Analysis(moves, count, legal, pinned, attacked, n_checks > 0, np.where(legal_ep, ep, -1))


def _cycle(times: np.ndarray) -> np.ndarray:
    """Knight, bishop, rook, queen for each promotion in a repeated row (0 for the rest)."""
    start = np.cumsum(times) - times
    offset = np.arange(times.sum()) - np.repeat(start, times)
    return KNIGHT + offset


def _scatter(n: int, rows: np.ndarray, squares: np.ndarray) -> np.ndarray:
    out = np.zeros((n, 64), dtype=bool)
    out[rows, squares] = True
    return out


def from_boards(boards) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The arguments of :func:`analyse` for python-chess ``Board`` objects: mailboxes, white to move,
    castling rights and the en-passant square (python-chess's ``ep_square``, -1 when there is none)."""
    n = len(boards)
    board = np.zeros((n, 64), dtype=np.int8)
    white = np.zeros(n, dtype=bool)
    castling = np.zeros(n, dtype=np.uint8)
    ep = np.full(n, -1, dtype=np.int64)
    for i, b in enumerate(boards):
        for square, piece in b.piece_map().items():
            board[i, square] = piece.piece_type + (0 if piece.color else BLACK)
        white[i] = b.turn
        rights = b.clean_castling_rights()
        castling[i] = sum(right for right, rook in _ROOK_CORNERS if rights >> rook & 1)
        ep[i] = -1 if b.ep_square is None else b.ep_square
    return board, white, castling, ep


_DARK = np.uint64(0xAA55_AA55_AA55_AA55)  # a1 is dark


def insufficient_material(board: np.ndarray) -> np.ndarray:
    """Positions where neither side can ever mate, by python-chess's rule: a side has insufficient
    material with a bare king; a king and one knight when the other side has only a king and queens;
    or bishops all on one square colour when nobody has pawns or knights."""
    bbs = bitboards(board)
    no_pawns_or_knights = np.bitwise_or.reduce(bbs[:, :, :2], axis=(1, 2)) == 0
    bishops = bbs[:, 0, 2] | bbs[:, 1, 2]
    one_colour = ((bishops & _DARK) == 0) | ((bishops & ~_DARK) == 0)
    out = np.ones(len(board), dtype=bool)
    for side in (0, 1):
        mine, other = bbs[:, side], bbs[:, 1 - side]
        heavy = (mine[:, 0] | mine[:, 3] | mine[:, 4]) != 0
        lone_knight = (popcount(np.bitwise_or.reduce(mine, axis=1)) <= 2) & (
            np.bitwise_or.reduce(other[:, :4], axis=1) == 0
        )
        minor = np.where(
            mine[:, 1] != 0, lone_knight, np.where(mine[:, 2] != 0, one_colour & no_pawns_or_knights, True)
        )
        out &= ~heavy & minor
    return out
