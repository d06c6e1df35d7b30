"""Chess games: random and given games played on :mod:`games.chessgame.position`, vectorised over a batch,
with every position's properties recorded, and the ways a game ends.

A game ends as python-chess's ``Board.outcome()`` says (checkmate, insufficient material, stalemate, the
75-move rule, fivefold repetition, in that order of precedence) or at the ply cap. The tests replay games
move by move in python-chess.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from enum import IntEnum

import numpy as np

from games.chessgame.position import (
    BLACK,
    KING,
    KNIGHT,
    PAWN,
    QUEEN,
    START,
    Analysis,
    Castling,
    Moves,
    analyse,
    insufficient_material,
    move_code,
    move_uci,
)
from groundtruth.checks import check_int, check_real
from groundtruth.threads import map_threads


class Termination(IntEnum):
    """How a game ended, as :attr:`Games.termination` stores it (python-chess's ``Termination`` names)."""

    NONE = 0  # not over: stopped at the ply cap, or where the given moves ran out
    CHECKMATE = 1
    STALEMATE = 2
    INSUFFICIENT_MATERIAL = 3
    SEVENTYFIVE_MOVES = 4
    FIVEFOLD_REPETITION = 5


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
    return h ^ np.where(white, _WHITE_KEY, np.uint64(0))


# Rights kept when a move touches a square: moving or capturing on e1, h1, a1, e8, h8, a8 ends some.
_KEEP = np.full(64, Castling.ALL, dtype=np.uint8)
_KEEP[[4, 7, 0, 60, 63, 56]] = [
    Castling.ALL ^ (Castling.WHITE_KING | Castling.WHITE_QUEEN),
    Castling.ALL ^ Castling.WHITE_KING,
    Castling.ALL ^ Castling.WHITE_QUEEN,
    Castling.ALL ^ (Castling.BLACK_KING | Castling.BLACK_QUEEN),
    Castling.ALL ^ Castling.BLACK_KING,
    Castling.ALL ^ Castling.BLACK_QUEEN,
]


@dataclass(frozen=True)
class Games:
    """A batch of games, one row per game, padded after its last ply.

    ``moves [n, T]``: ``src + 64 × dst + 4096 × promotion`` (python-chess piece types), -1 after the
    end. ``boards [n, T + 1, 64]``: the mailbox after each ply (row 0: the start); the rest are the
    properties of those positions, each for the side to move there (see :class:`Analysis`):
    ``castling``, ``en_passant``, ``check``, ``legal``, ``n_legal`` (number of legal moves), ``pinned``,
    ``attacks [n, T + 1, 2]`` (by white, by black). Rows after the end repeat the final position.
    ``disambiguation [n, T]``: bit 1, the move's SAN names its file; bit 2, its rank. ``length [n]``:
    plies played. ``termination [n]``: a :class:`Termination` code.
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
        return [move_uci(int(m)) for m in self.moves[game, : self.length[game]]]


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


def from_uci(games: Sequence[Sequence[str]], max_plies: int | None = None) -> Games:
    """Games made of the given moves (UCI, e.g. ``["e2e4", "e7e5"]``), with every position and property,
    as :func:`random_games` returns them: real transcripts get the same labels as random ones. A game whose
    moves run out before it is over keeps termination :attr:`Termination.NONE`. The record holds
    ``max_plies`` plies (default: the longest game's, at least 1), as a batch of random games does.

    Raises ``ValueError`` naming the game, the ply and the move when a move is malformed or illegal, or when
    moves follow the end of a game.
    """
    if isinstance(games, str) or not all(isinstance(g, Sequence) and not isinstance(g, str) for g in games):
        raise TypeError(f"games must be a sequence of move lists, got {games!r:.80}")
    check_int("len(games)", len(games))
    longest = max(len(g) for g in games)
    width = max(1, longest) if max_plies is None else check_int("max_plies", max_plies)
    if longest > width:
        raise ValueError(f"max_plies={max_plies} is shorter than the longest game ({longest} plies)")
    codes = np.full((len(games), width), -1, dtype=np.int64)
    for i, game in enumerate(games):
        for t, move in enumerate(game):
            if not isinstance(move, str) or not _UCI_MOVE.fullmatch(move):
                raise ValueError(f"games[{i}][{t}] is not a UCI move: {move!r}")
            codes[i, t] = move_code(move)

    def choose(t: int, live: np.ndarray, a: Analysis, going: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        want = codes[live, t]
        for i in np.flatnonzero(~going & (want >= 0))[:1]:
            raise ValueError(f"games[{live[i]}] is over after ply {t}, but move {move_uci(int(want[i]))!r} follows")
        going &= want >= 0
        listed = a.moves.src + 64 * a.moves.dst + 4096 * a.moves.promotion.astype(np.int64)
        hit = np.flatnonzero(listed == want[a.moves.game])
        pick = np.full(len(live), -1)
        pick[a.moves.game[hit]] = hit
        for i in np.flatnonzero(going & (pick < 0))[:1]:
            raise ValueError(f"games[{live[i]}][{t}] = {move_uci(int(want[i]))!r} is not a legal move there")
        return going, pick[going]

    return _play(len(games), width, choose)


_UCI_MOVE = re.compile(r"[a-h][1-8][a-h][1-8][nbrq]?")


def _play(n: int, max_plies: int, choose: Callable) -> Games:
    """Play ``n`` games from the start for up to ``max_plies`` plies; ``choose(t, live, analysis, going)``
    returns which live games go on and the index into ``analysis.moves`` of each one's move."""
    cols = max_plies + 1
    board = np.tile(START, (n, 1))
    castling = np.full(n, Castling.ALL, dtype=np.uint8)
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
        end = np.where(_repetitions(hashes[live], t, clock[live]) >= 5, Termination.FIVEFOLD_REPETITION, 0)
        end = np.where(clock[live] >= 150, Termination.SEVENTYFIVE_MOVES, end)
        end = np.where(a.count == 0, Termination.STALEMATE, end)
        end = np.where(insufficient_material(pos), Termination.INSUFFICIENT_MATERIAL, end)
        end = np.where((a.count == 0) & a.check, Termination.CHECKMATE, end)
        termination[live] = end
        if t == max_plies:
            break
        going, pick = choose(t, live, a, end == Termination.NONE)
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
    kind = board[np.arange(n), np.maximum(src, 0)] % BLACK  # pawn 1, knight 2 ... king 0
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
    offset = 0 if white else BLACK
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
