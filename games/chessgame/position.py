"""Chess on bitboards, vectorised over a batch of games, with exact board properties at every ply.

Squares follow python-chess: ``a1 = 0, b1 = 1, ..., h8 = 63`` (file + 8 × rank). A position is a
mailbox ``[n, 64]`` int8 (0 empty, 1–6 white pawn, knight, bishop, rook, queen, king, 7–12 the
black pieces in the same order), the side to move, castling rights (bits: 1 white king side, 2 white
queen side, 4 black king side, 8 black queen side) and the en-passant square.

Each step turns the mailbox of every live game into piece bitboards and finds all legal moves at once:
attacks come from shift-and-mask fills (Kogge–Stone fills for sliders), moves are restricted by the
check-evasion mask and by pin lines, the king avoids squares the opponent attacks with the king lifted
off the board, and en-passant captures are tested by making them. A game ends as python-chess's
``Board.outcome()`` says (checkmate, insufficient material, stalemate, the 75-move rule, fivefold
repetition, in that order) or at the ply cap. The tests replay games move by move in python-chess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields

import chess
import numpy as np
import torch

from games.bitboards import FULL, bit, from_squares, popcount, to_squares
from groundtruth.checks import check_int, check_real
from groundtruth.latents import TokenBatch
from groundtruth.threads import map_threads

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
START = np.zeros(64, dtype=np.int8)
START[:8] = [ROOK, KNIGHT, BISHOP, QUEEN, KING, BISHOP, KNIGHT, ROOK]
START[8:16] = PAWN
START[48:56] = PAWN + 6
START[56:] = START[:8] + 6
ALL_CASTLING = 15
TERMINATIONS = ("none", "checkmate", "stalemate", "insufficient_material", "seventyfive_moves", "fivefold_repetition")


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
    kind = board[game, src] - np.where(white[game], 0, 6)
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
    rights = castling >> np.where(white, 0, 2)
    safe = n_checks == 0
    home = (king & bit(base + 4)) != 0
    for right, rook, path, walk, dst in ((1, 7, (5, 6), (5, 6), 6), (2, 0, (1, 2, 3), (2, 3), 2)):
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
            board[i, square] = piece.piece_type + (0 if piece.color else 6)
        white[i] = b.turn
        rights = b.clean_castling_rights()
        castling[i] = sum(bit_ for bit_, corner in ((1, 7), (2, 0), (4, 63), (8, 56)) if rights >> corner & 1)
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


_keys = np.random.default_rng(0x5EED).integers(0, 2**63, size=13 * 64 + 16 + 65 + 1, dtype=np.uint64)
_PIECE_KEYS = _keys[: 13 * 64].reshape(13, 64)
_PIECE_KEYS[0] = 0  # empty squares add nothing
_CASTLING_KEYS, _EP_KEYS, _WHITE_KEY = _keys[832:848], _keys[848:913], _keys[913]
_EP_KEYS[0] = 0  # index ep + 1: no en-passant square adds nothing


def _hash(board: np.ndarray, white: np.ndarray, castling: np.ndarray, en_passant: np.ndarray) -> np.ndarray:
    """Zobrist hashes of positions as python-chess compares them for repetitions: pieces, side to move,
    castling rights and the en-passant square only when a capture there is legal."""
    h = np.bitwise_xor.reduce(_PIECE_KEYS[board, np.arange(64)], axis=1)
    h ^= _CASTLING_KEYS[castling] ^ _EP_KEYS[en_passant.astype(np.int64) + 1]
    return h ^ np.where(white, _WHITE_KEY, _ZERO)


# Rights kept when a move touches a square: moving or capturing on e1, h1, a1, e8, h8, a8 ends some.
_KEEP = np.full(64, ALL_CASTLING, dtype=np.uint8)
_KEEP[[4, 7, 0, 60, 63, 56]] = [15 ^ 3, 15 ^ 1, 15 ^ 2, 15 ^ 12, 15 ^ 4, 15 ^ 8]


@dataclass(frozen=True)
class Games:
    """A batch of games, one row per game, padded after its last ply.

    ``moves [n, T]``: ``src + 64 × dst + 4096 × promotion`` (python-chess piece types), -1 after the
    end. ``boards [n, T + 1, 64]``: the mailbox after each ply (row 0: the start); the rest are the
    properties of those positions, each for the side to move there (see :class:`Analysis`):
    ``castling``, ``en_passant``, ``check``, ``legal``, ``n_legal`` (number of legal moves), ``pinned``,
    ``attacks [n, T + 1, 2]`` (by white, by black). Rows after the end repeat the final position.
    ``disambiguation [n, T]``: bit 1, the move's SAN names its file; bit 2, its rank. ``length [n]``:
    plies played. ``termination [n]``: an index into :data:`TERMINATIONS` (0: not over, stopped at the ply cap
    or where the given moves ran out).
    White moves at even plies.
    """

    moves: np.ndarray
    boards: np.ndarray
    castling: np.ndarray
    en_passant: np.ndarray
    check: np.ndarray
    legal: np.ndarray
    n_legal: np.ndarray
    pinned: np.ndarray
    attacks: np.ndarray
    disambiguation: np.ndarray
    length: np.ndarray
    termination: np.ndarray

    def __len__(self) -> int:
        return len(self.length)

    def uci(self, game: int) -> list[str]:
        """Game ``game``'s moves in UCI (``e2e4``, ``e7e8q``)."""
        return [_uci(int(m)) for m in self.moves[game, : self.length[game]]]


def _uci(code: int) -> str:
    src, dst, promotion = code % 64, code // 64 % 64, code // 4096
    return square_name(src) + square_name(dst) + ("", "", "n", "b", "r", "q")[promotion]


CHUNK = 4096  # games drawn from one seeded generator; fixed, so results do not depend on threads


def random_games(n: int, rng: np.random.Generator, max_plies: int = 200, capture_weight: float = 1.0) -> Games:
    """``n`` games of random legal moves, each stopped at its end or after ``max_plies`` plies.

    Each move is drawn with probability proportional to its weight: ``capture_weight`` for captures,
    1 for the rest; the default plays uniformly random legal moves, a larger weight gives games with
    more exchanges (a cheap non-uniform policy). Games are played in chunks of :data:`CHUNK`, each
    from its own generator seeded from ``rng``, on torch's threads: the same games on any number.
    """
    check_int("n", n)
    check_int("max_plies", max_plies)
    check_real("capture_weight", capture_weight, 0.0, low_open=True)
    starts = range(0, n, CHUNK)
    seeds = rng.integers(0, 2**63 - 1, size=len(starts)).tolist()

    def play(a: int, seed: int) -> Games:
        rng_chunk = np.random.default_rng(seed)
        choose = lambda t, live, a, going: (going, _pick(a.moves, a.count, going, capture_weight, rng_chunk))  # noqa: E731
        return _play(min(CHUNK, n - a), max_plies, choose)

    return _concatenate(map_threads(play, starts, seeds))


def _concatenate(parts: list[Games]) -> Games:
    if len(parts) == 1:
        return parts[0]
    return Games(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Games)))


def from_uci(games: Sequence[Sequence[str]]) -> Games:
    """Games made of the given moves (UCI, e.g. ``["e2e4", "e7e5"]``), with every position and property,
    as :func:`random_games` returns them: real transcripts get the same labels as random ones. A game whose
    moves run out before it is over keeps termination ``"none"``.

    Raises ``ValueError`` naming the game, the ply and the move when a move is malformed or illegal, or when
    moves follow the end of a game.
    """
    if isinstance(games, str) or not all(isinstance(g, Sequence) and not isinstance(g, str) for g in games):
        raise TypeError(f"games must be a sequence of move lists, got {games!r:.80}")
    check_int("len(games)", len(games))
    width = max(1, max(len(g) for g in games))
    codes = np.full((len(games), width), -1, dtype=np.int64)
    for i, game in enumerate(games):
        for t, move in enumerate(game):
            if not isinstance(move, str) or not _UCI_MOVE.fullmatch(move):
                raise ValueError(f"games[{i}][{t}] is not a UCI move: {move!r}")
            codes[i, t] = _code(move)

    def choose(t: int, live: np.ndarray, a: Analysis, going: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        want = codes[live, t]
        for i in np.flatnonzero(~going & (want >= 0))[:1]:
            raise ValueError(f"games[{live[i]}] is over after ply {t}, but move {_uci(int(want[i]))!r} follows")
        going &= want >= 0
        listed = a.moves.src + 64 * a.moves.dst + 4096 * a.moves.promotion.astype(np.int64)
        hit = np.flatnonzero(listed == want[a.moves.game])
        pick = np.full(len(live), -1)
        pick[a.moves.game[hit]] = hit
        for i in np.flatnonzero(going & (pick < 0))[:1]:
            raise ValueError(f"games[{live[i]}][{t}] = {_uci(int(want[i]))!r} is not a legal move there")
        return going, pick[going]

    return _play(len(games), width, choose)


_UCI_MOVE = re.compile(r"[a-h][1-8][a-h][1-8][nbrq]?")


def _play(n: int, max_plies: int, choose: Callable) -> Games:
    """Play ``n`` games from the start for up to ``max_plies`` plies; ``choose(t, live, analysis, going)``
    returns which live games go on and the index into ``analysis.moves`` of each one's move."""
    cols = max_plies + 1
    board = np.tile(START, (n, 1))
    castling = np.full(n, ALL_CASTLING, dtype=np.uint8)
    ep = np.full(n, -1, dtype=np.int64)
    clock = np.zeros(n, dtype=np.int64)
    out = {
        "moves": np.full((n, max_plies), -1, dtype=np.int16),
        "boards": np.empty((n, cols, 64), dtype=np.int8),
        "castling": np.empty((n, cols), dtype=np.uint8),
        "en_passant": np.empty((n, cols), dtype=np.int8),
        "check": np.empty((n, cols), dtype=bool),
        "legal": np.empty((n, cols), dtype=np.uint64),
        "n_legal": np.empty((n, cols), dtype=np.int16),
        "pinned": np.empty((n, cols), dtype=np.uint64),
        "attacks": np.empty((n, cols, 2), dtype=np.uint64),
        "disambiguation": np.zeros((n, max_plies), dtype=np.int8),
    }
    hashes = np.zeros((n, cols), dtype=np.uint64)
    length = np.zeros(n, dtype=np.int64)
    termination = np.zeros(n, dtype=np.int8)
    live = np.arange(n)
    for t in range(cols):
        white = np.full(len(live), t % 2 == 0)
        pos = board[live]
        a = analyse(pos, white, castling[live], ep[live])
        out["boards"][live, t] = pos
        out["castling"][live, t] = castling[live]
        out["en_passant"][live, t] = a.en_passant
        out["check"][live, t] = a.check
        out["legal"][live, t] = a.legal
        out["n_legal"][live, t] = a.count
        out["pinned"][live, t] = a.pinned
        out["attacks"][live, t] = a.attacks
        hashes[live, t] = _hash(pos, white, castling[live], a.en_passant)
        length[live] = t

        # Later conditions overwrite earlier ones: python-chess's order of precedence.
        end = np.where(_repetitions(hashes[live], t, clock[live]) >= 5, 5, 0)
        end = np.where(clock[live] >= 150, 4, end)
        end = np.where(a.count == 0, 2, end)
        end = np.where(insufficient_material(pos), 3, end)
        end = np.where((a.count == 0) & a.check, 1, end)
        termination[live] = end
        if t == max_plies:
            break
        going, pick = choose(t, live, a, end == 0)
        live, src, dst = live[going], a.moves.src[pick], a.moves.dst[pick]
        promotion = a.moves.promotion[pick]
        out["moves"][live, t] = src + 64 * dst + 4096 * promotion
        out["disambiguation"][live, t] = _disambiguation(a.moves, pick, pos, np.flatnonzero(going))
        _move(board, castling, ep, clock, live, src, dst, promotion, white=t % 2 == 0)
        if not live.size:
            break
    last = np.minimum(np.arange(cols), length[:, None])  # rows after the end repeat the final position
    rows = np.arange(n)[:, None]
    for name in ("boards", "castling", "en_passant", "check", "legal", "n_legal", "pinned", "attacks"):
        out[name] = out[name][rows, last]
    return Games(**out, length=length, termination=termination)


def _repetitions(hashes: np.ndarray, t: int, clock: np.ndarray) -> np.ndarray:
    """How often the position at ply ``t`` has occurred since the last capture or pawn move."""
    count = np.ones(len(hashes), dtype=np.int64)
    rows = np.flatnonzero(clock >= 8)  # four earlier occurrences need at least eight reversible plies
    if rows.size:
        back = np.arange(2, int(clock[rows].max()) + 1, 2)
        back = back[back <= t]
        seen = hashes[rows[:, None], t - back] == hashes[rows, t][:, None]
        count[rows] += (seen & (back <= clock[rows, None])).sum(1)
    return count


def _pick(moves: Moves, count: np.ndarray, going: np.ndarray, capture_weight: float, rng: np.random.Generator):
    """Index into ``moves`` of one move per position that goes on, drawn in proportion to the weights."""
    first = np.cumsum(count) - count
    u = rng.random(len(count))
    first, last, u = first[going], first[going] + count[going] - 1, u[going]
    if capture_weight == 1.0:
        return first + (u * count[going]).astype(np.int64)
    weight = np.where(moves.capture, capture_weight, 1.0)
    total = np.cumsum(weight)
    low = total[first] - weight[first]
    return np.clip(np.searchsorted(total, low + u * (total[last] - low), side="right"), first, last)


def _disambiguation(moves: Moves, pick: np.ndarray, board: np.ndarray, game: np.ndarray) -> np.ndarray:
    """SAN disambiguation of the picked moves: 1 when the file is written, 2 the rank, 3 both."""
    n = len(board)
    src, dst = np.full(n, -1), np.full(n, -1)
    src[game], dst[game] = moves.src[pick], moves.dst[pick]
    kind = board[np.arange(n), np.maximum(src, 0)] % 6  # pawn 1, knight 2 ... king 0
    g = moves.game
    rival = (moves.dst == dst[g]) & (moves.src != src[g]) & (board[g, moves.src] == board[g, np.maximum(src[g], 0)])
    rival &= (kind[g] >= KNIGHT) & (kind[g] <= QUEEN)
    same_file = np.bincount(g[rival & (moves.src % 8 == src[g] % 8)], minlength=n) > 0
    same_rank = np.bincount(g[rival & (moves.src // 8 == src[g] // 8)], minlength=n) > 0
    any_rival = np.bincount(g[rival], minlength=n) > 0
    # The file tells the rivals apart unless one shares it; then the rank, or both when one shares each.
    hint = np.where(any_rival & (same_rank | ~same_file), 1, 0) + np.where(same_file, 2, 0)
    return hint[game].astype(np.int8)


def _move(board, castling, ep, clock, games, src, dst, promotion, white: bool) -> None:
    """Play one move in each of ``games``, in place."""
    offset = 0 if white else 6
    code = board[games, src]
    kind = code - offset
    captured = board[games, dst] != 0
    passant = (kind == PAWN) & (dst % 8 != src % 8) & ~captured
    board[games, dst] = np.where(promotion > 0, promotion + offset, code)
    board[games, src] = 0
    board[games[passant], dst[passant] + (-8 if white else 8)] = 0
    castle = (kind == KING) & (np.abs(dst - src) == 2)
    g, kside = games[castle], dst[castle] > src[castle]
    rook_from = np.where(kside, src[castle] + 3, src[castle] - 4)
    rook_to = np.where(kside, src[castle] + 1, src[castle] - 1)
    board[g, rook_to] = board[g, rook_from]
    board[g, rook_from] = 0
    castling[games] &= _KEEP[src] & _KEEP[dst]
    ep[games] = np.where((kind == PAWN) & (np.abs(dst - src) == 16), (src + dst) // 2, -1)
    clock[games] = np.where((kind == PAWN) | captured, 0, clock[games] + 1)


def san(games: Games, game: int) -> list[str]:
    """Game ``game``'s moves in standard algebraic notation, as python-chess's ``Board.san`` writes them
    (``e4``, ``Nbd7``, ``exd6``, ``O-O``, ``e8=Q+``, ``Qh4#``)."""
    out = []
    for t in range(int(games.length[game])):
        code = int(games.moves[game, t])
        src, dst, promotion = code % 64, code // 64 % 64, code // 4096
        kind = (int(games.boards[game, t, src]) - 1) % 6 + 1
        if kind == KING and abs(dst - src) == 2:
            text = "O-O" if dst > src else "O-O-O"
        else:
            capture = games.boards[game, t, dst] != 0 or (kind == PAWN and dst % 8 != src % 8)
            hint = int(games.disambiguation[game, t])
            text = "" if kind == PAWN else "PNBRQK"[kind - 1]
            text += "abcdefgh"[src % 8] if hint & 1 or (kind == PAWN and capture) else ""
            text += str(src // 8 + 1) if hint & 2 else ""
            text += ("x" if capture else "") + square_name(dst)
            text += "=" + "PNBRQK"[promotion - 1] if promotion else ""
        if games.check[game, t + 1]:
            text += "#" if games.n_legal[game, t + 1] == 0 else "+"
        out.append(text)
    return out


PGN_VOCAB = " #+-.0123456789;=BKNOQRabcdefghx"  # ChessGPT's 32 characters; a token is its index here
_CHAR_ID = np.full(128, -1, dtype=np.int64)
_CHAR_ID[[ord(c) for c in PGN_VOCAB]] = np.arange(len(PGN_VOCAB))


def pgn(games: Games, game: int) -> tuple[str, list[int]]:
    """Game ``game`` as ChessGPT's training string (``;1.e4 e5 2.Nf3 …``, no result) and, for each
    character, the ply whose position it carries: a move's characters and the text up to the next
    move carry the position after that move; ``;1.`` carries the start."""
    text, plies = [";"], [0]
    for t, move in enumerate(san(games, game)):
        number = f"{t // 2 + 1}." if t % 2 == 0 else ""
        piece = (" " if t > 0 else "") + number
        text.append(piece + move)
        plies.extend([t] * len(piece) + [t + 1] * len(move))
    return "".join(text), plies


def pgn_tokens(games: Games, n_ctx: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Character tokens ``[n, n_ctx]`` of :func:`pgn` (indices into :data:`PGN_VOCAB`) and the ply each
    character carries ``[n, n_ctx]``; games are cut at ``n_ctx`` (default: the longest) and padded with
    spaces carrying ply -1."""
    strings = [pgn(games, i) for i in range(len(games))]
    width = n_ctx if n_ctx is not None else max(len(s) for s, _ in strings)
    check_int("n_ctx", width)
    tokens = np.zeros((len(games), width), dtype=np.int64)
    plies = np.full((len(games), width), -1, dtype=np.int64)
    for i, (text, carried) in enumerate(strings):
        k = min(len(text), width)
        tokens[i, :k] = _CHAR_ID[np.frombuffer(text[:k].encode(), dtype=np.uint8)]
        plies[i, :k] = carried[:k]
    return tokens, plies


def from_pgn(texts: Sequence[str]) -> Games:
    """Games from ChessGPT strings (``;1.e4 e5 2.Nf3``, as :func:`pgn` writes them), through
    :func:`from_uci`. Moves are read as SAN by python-chess, so ``Nf3``, ``Nf3+`` and ``Ngf3`` are all
    read where they name one legal move. Raises ``ValueError`` naming the string, the ply and the text
    when the string is malformed (no leading ``;``, a missing or wrong move number, an unknown
    character) or a move is illegal or ambiguous.
    """
    if isinstance(texts, str):
        raise TypeError(f"texts must be a sequence of strings, got the string {texts!r:.80}")
    return from_uci([_parse_pgn(i, text) for i, text in enumerate(texts)])


def _parse_pgn(i: int, text: str) -> list[str]:
    if not isinstance(text, str) or not text.startswith(";"):
        raise ValueError(f"texts[{i}] must start with ';', got {text!r:.80}")
    if bad := set(text) - set(PGN_VOCAB):
        raise ValueError(f"texts[{i}] has characters outside the PGN vocabulary: {sorted(bad)}")
    board, moves = chess.Board(), []
    for t, word in enumerate(text[1:].split(" ") if len(text) > 1 else []):
        number = f"{t // 2 + 1}."
        if t % 2 == 0:
            if not word.startswith(number):
                raise ValueError(f"texts[{i}] ply {t}: expected {number!r} before white's move, got {word!r}")
            word = word[len(number) :]
        try:
            move = board.parse_san(word)
        except ValueError as error:  # python-chess's illegal, ambiguous and invalid moves
            raise ValueError(f"texts[{i}] ply {t}: {word!r} is not a legal move there ({error})") from None
        moves.append(move.uci())
        board.push(move)
    return moves


def detokenize_pgn(tokens: np.ndarray) -> list[str]:
    """Character tokens ``[n, n_ctx]`` (indices into :data:`PGN_VOCAB`) back to strings, trailing
    padding removed; the inverse of :func:`pgn_tokens` for games that fit the context."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.size and (tokens.min() < 0 or tokens.max() >= len(PGN_VOCAB)):
        raise ValueError(f"tokens must be [n, n_ctx] indices into PGN_VOCAB, got shape {tokens.shape}")
    chars = np.frombuffer(PGN_VOCAB.encode(), dtype=np.uint8)[tokens]
    return [row.tobytes().decode().rstrip(" ") for row in chars]


def detokenize_uci(tokens: np.ndarray) -> list[list[str]]:
    """Move tokens ``[n, T + 1]`` (indices into :data:`UCI_VOCAB`, ``<start>`` first) back to UCI move
    lists, stopping at the first ``<pad>``; the inverse of :func:`uci_tokens`."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.size and (tokens.min() < 0 or tokens.max() >= len(UCI_VOCAB)):
        raise ValueError(f"tokens must be [n, T] indices into UCI_VOCAB, got shape {tokens.shape}")
    if tokens.size and (tokens[:, 0] != 1).any():
        raise ValueError(f"every row must begin with <start> (1), got first tokens {tokens[:, 0].tolist()[:8]}")
    out = []
    for row in tokens[:, 1:].tolist():
        end = row.index(0) if 0 in row else len(row)
        if 1 in row[:end]:
            raise ValueError(f"<start> (1) inside a game: {row[:end]}")
        out.append([UCI_VOCAB[k] for k in row[:end]])
    return out


def _uci_vocabulary() -> tuple[str, ...]:
    """Every move UCI can write in standard chess: queen-line and knight moves between squares (1,792)
    and the pawn promotions to rank 8 or 1 (176)."""
    moves = []
    for src in range(64):
        for dst in range(64):
            df, dr = abs(dst % 8 - src % 8), abs(dst // 8 - src // 8)
            if src != dst and (df == 0 or dr == 0 or df == dr or {df, dr} == {1, 2}):
                moves.append(square_name(src) + square_name(dst))
    for src_rank, dst_rank in ((6, 7), (1, 0)):
        for file in range(8):
            for to_file in range(max(file - 1, 0), min(file + 2, 8)):
                for piece in "nbrq":
                    moves.append(square_name(8 * src_rank + file) + square_name(8 * dst_rank + to_file) + piece)
    return tuple(moves)


UCI_VOCAB = ("<pad>", "<start>", *_uci_vocabulary())  # 1,970 tokens: 0 pads, 1 starts a game


def _code(uci: str) -> int:
    """``e7e8q`` → ``src + 64 × dst + 4096 × promotion``, the layout of :attr:`Games.moves`."""
    src, dst = ("abcdefgh".index(uci[i]) + 8 * (int(uci[i + 1]) - 1) for i in (0, 2))
    return src + 64 * dst + 4096 * " pnbrq".index(uci[4:] or " ")


_UCI_ID = np.zeros(4096 * 6, dtype=np.int64)
_UCI_ID[[_code(m) for m in UCI_VOCAB[2:]]] = np.arange(2, len(UCI_VOCAB))


def uci_tokens(games: Games) -> np.ndarray:
    """Tokens ``[n, T + 1]``: ``<start>``, then one token per move (indices into :data:`UCI_VOCAB`),
    0 after the end; token ``t`` carries the position after ``t`` plies, like the rows of ``boards``."""
    first = np.ones((len(games), 1), dtype=np.int64)
    return np.concatenate([first, np.where(games.moves >= 0, _UCI_ID[np.maximum(games.moves, 0)], 0)], axis=1)


def legal_move_tokens(games: Games, plies: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every legal move, as a UCI token, at every position after ``t < plies`` plies (default: all) of every
    game that is not over there: arrays ``(game, t, token)``, one row per legal move. These are what a model
    reading :func:`uci_tokens` may legally predict after token ``t``."""
    n, cols = games.boards.shape[:2]
    cols = cols if plies is None else min(plies, cols)
    g, t = np.nonzero(np.arange(cols)[None, :] < games.length[:, None])
    a = analyse(games.boards[g, t], t % 2 == 0, games.castling[g, t], games.en_passant[g, t].astype(np.int64))
    code = a.moves.src + 64 * a.moves.dst + 4096 * a.moves.promotion.astype(np.int64)
    return g[a.moves.game], t[a.moves.game], _UCI_ID[code]


def training_batches(batch_size: int, max_plies: int, seed: int = 0, *, soft: bool = False) -> Iterator:
    """An endless stream of fresh random games for next-move training on :func:`uci_tokens`, as
    :func:`games.othello.training_batches`: tokens ``[b, max_plies + 1]``, or with ``soft`` the pair
    ``(inputs [b, max_plies], probs [b, max_plies, 1970])``, uniform over the legal moves (all mass on
    ``<pad>`` once the game is over)."""
    check_int("batch_size", batch_size)
    rng = np.random.default_rng(seed)
    while True:
        games = random_games(batch_size, rng, max_plies)
        tokens = torch.from_numpy(uci_tokens(games))
        if not soft:
            yield tokens
            continue
        probs = torch.zeros(batch_size, max_plies, len(UCI_VOCAB))
        g, t, token = (torch.from_numpy(a) for a in legal_move_tokens(games, max_plies))
        probs[g, t, token] = 1.0
        probs[..., 0] = torch.from_numpy(np.arange(max_plies)[None, :] >= games.length[:, None])
        yield tokens[:, :max_plies], probs / probs.sum(-1, keepdim=True)


PIECE_CLASSES = ("blank",) + tuple(f"{c}_{p}" for c in ("white", "black") for p in PIECE_NAMES)  # mailbox codes
SQUARE_PROPERTIES = (*PIECE_CLASSES, "initial", "mine", "theirs", "legal", "mine_attacks", "theirs_attacks")
SQUARE_PROPERTIES += ("pinned", "en_passant")
FLAGS = ("check", "white_to_move", "castle_white_king", "castle_white_queen", "castle_black_king")
FLAGS += ("castle_black_queen",)


def label_names() -> tuple[str, ...]:
    """Names of the per-ply labels: ``blank@a1`` … ``black_king@h8`` (the piece on each square, 13
    classes), ``initial@`` (the square holds its starting piece), ``mine@``/``theirs@`` (pieces of the
    side to move / the other side), ``legal@`` (destinations of legal moves), ``mine_attacks@`` /
    ``theirs_attacks@``, ``pinned@`` (the mover's pieces pinned to its king), ``en_passant@`` (a legal
    en-passant capture lands there), then ``check``, ``white_to_move`` and the four castling rights."""
    return tuple(f"{p}@{square_name(s)}" for p in SQUARE_PROPERTIES for s in range(64)) + FLAGS


def ply_labels(games: Games) -> np.ndarray:
    """Labels ``[n, T + 1, 1350]`` (bool, names from :func:`label_names`) of the position after each ply,
    for the side to move there; all False after the end of a game."""
    n, cols = games.boards.shape[:2]
    labels = np.empty((n, cols, len(label_names())), dtype=bool)
    map_threads(lambda a: _fill_labels(_rows(games, slice(a, a + CHUNK)), labels[a : a + CHUNK]), range(0, n, CHUNK))
    return labels


def _rows(games: Games, rows: slice) -> Games:
    return Games(*(getattr(games, f.name)[rows] for f in fields(Games)))


def _fill_labels(games: Games, labels: np.ndarray) -> None:
    n, cols = games.boards.shape[:2]
    squares = labels[:, :, : 64 * len(SQUARE_PROPERTIES)].reshape(n, cols, len(SQUARE_PROPERTIES), 64)
    board = games.boards
    np.equal(board[:, :, None, :], np.arange(13, dtype=np.int8)[:, None], out=squares[:, :, :13])
    np.equal(board, START, out=squares[:, :, 13])
    white = (np.arange(cols) % 2 == 0)[None, :] & np.ones((n, 1), dtype=bool)
    white_pieces = (board >= 1) & (board <= 6)
    black_pieces = board >= 7
    w = white[..., None]
    squares[:, :, 14] = np.where(w, white_pieces, black_pieces)
    squares[:, :, 15] = np.where(w, black_pieces, white_pieces)
    squares[:, :, 16] = to_squares(games.legal)
    by = to_squares(games.attacks)  # [n, cols, 2, 64]
    squares[:, :, 17] = np.where(w, by[:, :, 0], by[:, :, 1])
    squares[:, :, 18] = np.where(w, by[:, :, 1], by[:, :, 0])
    squares[:, :, 19] = to_squares(games.pinned)
    np.equal(games.en_passant[..., None], np.arange(64, dtype=np.int8), out=squares[:, :, 20])
    flags = labels[:, :, 64 * len(SQUARE_PROPERTIES) :]
    flags[:, :, 0] = games.check
    flags[:, :, 1] = white
    flags[:, :, 2:] = (games.castling[..., None] >> np.arange(4, dtype=np.uint8)) & 1
    labels[np.arange(cols)[None, :] > games.length[:, None]] = False


def token_batch(games: Games, tokenizer: str = "pgn", n_ctx: int | None = None) -> TokenBatch:
    """The games as a token source with the labels of :func:`ply_labels` at every token.

    ``tokenizer="pgn"``: ChessGPT's characters (:func:`pgn_tokens`), every character labelled with the
    position it carries, not only the ``.`` before white's moves. ``"uci"``: one token per move
    (:func:`uci_tokens`). Padding gets no labels.
    """
    labels = ply_labels(games)
    if tokenizer == "uci":
        tokens = uci_tokens(games)
    elif tokenizer == "pgn":
        tokens, plies = pgn_tokens(games, n_ctx)
        labels = np.where((plies >= 0)[..., None], labels[np.arange(len(games))[:, None], np.maximum(plies, 0)], False)
    else:
        raise ValueError(f"tokenizer must be 'pgn' or 'uci', got {tokenizer!r}")
    return TokenBatch(torch.from_numpy(tokens), torch.from_numpy(labels), label_names(), "binary")
