"""Othello rules on bitboards, vectorised over a batch of games.

A board is two ``uint64`` arrays, the discs of the player to move and of the opponent; bit ``8 * row +
col`` is the square in row ``row`` (A–H, top to bottom) and column ``col`` (1–8), so square 0 is A1 and
27, 28, 35, 36 are the centre. Black moves first from the standard start (D5 and E4 black, D4 and E5
white). A player with no legal move passes; the game ends when neither player can move.

Moves are found with shift-and-mask fills along the 8 directions (a line of opponent discs followed
by an empty square is a legal move; one closed by the mover's own disc is flipped), so each step costs
a few dozen array operations for the whole batch instead of a Python loop per game.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import torch

from games.bitboards import FULL as _FULL
from games.bitboards import to_squares
from groundtruth.checks import check_int
from groundtruth.latents import TokenBatch
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


CHUNK = 8192  # games drawn from one seeded generator; fixed, so results do not depend on threads


def random_games(n: int, rng: np.random.Generator) -> Games:
    """``n`` games of uniformly random legal moves (the OthelloGPT synthetic dataset's policy).

    Games are played in chunks of :data:`CHUNK`, each from its own generator seeded from ``rng``, on
    torch's threads (NumPy releases the GIL): the same games on any number of threads.
    """
    check_int("n", n)
    starts = range(0, n, CHUNK)
    seeds = rng.integers(0, 2**63 - 1, size=len(starts)).tolist()
    games = Games(  # every field is written by _play, chunk by chunk
        moves=np.empty((n, 60), dtype=np.int64),
        player=np.empty((n, 60), dtype=np.int8),
        boards=np.empty((n, 61, 64), dtype=np.int8),
        legal=np.empty((n, 60), dtype=np.uint64),
        flipped=np.empty((n, 60), dtype=np.uint64),
        length=np.empty(n, dtype=np.int64),
        score=np.empty(n, dtype=np.int64),
    )
    # Each chunk is played into its rows of `games`: concatenating chunks afterwards would run on one thread.
    map_threads(lambda a, seed: _play(_rows(games, slice(a, a + CHUNK)), np.random.default_rng(seed)), starts, seeds)
    return games


def _play(games: Games, rng: np.random.Generator) -> None:
    """Play the rows of ``games`` from the start to the end of each game, writing every field in place."""
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
        if not live.any():
            end = t
            break
        choice = _uniform_square(legal[live], rng)
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
PAD = 0
_TOKEN = np.zeros(64, dtype=np.int64)
_TOKEN[list(PLAYABLE)] = np.arange(1, 61)
PROPERTIES = ("mine", "theirs", "empty", "legal", "flipped", "move")


def tokenize(moves: np.ndarray) -> np.ndarray:
    """Squares ``[n, 60]`` (-1 after the end) to OthelloGPT tokens: 1-60 for the playable squares in
    order (A1 = 1, ..., H8 = 60, skipping the centre), 0 for padding; a vocabulary of 61."""
    return np.where(moves >= 0, _TOKEN[np.clip(moves, 0, 63)], PAD)


def training_batches(batch_size: int, seed: int = 0, *, soft: bool = False) -> Iterator:
    """An endless stream of fresh random games for next-move training (fresh games every step: nothing
    to overfit), in the forms :func:`toymodels.transformer.train_transformer` takes.

    Hard targets: tokens ``[batch_size, 60]`` (inputs ``[:, :-1]``, a context of :data:`N_CTX` moves;
    targets ``[:, 1:]``, the moves played, 0 after the end). Soft targets: ``(inputs [b, 59], probs
    [b, 59, 61])``, the exact next-move distribution of uniformly random play, uniform over the legal
    moves of the player who moves next (all mass on pad once the game is over): the same expected
    gradient as sampled moves, without their noise.
    """
    check_int("batch_size", batch_size)
    rng = np.random.default_rng(seed)
    while True:
        games = random_games(batch_size, rng)
        tokens = torch.from_numpy(tokenize(games.moves))
        if not soft:
            yield tokens
            continue
        yield tokens[:, :N_CTX], torch.from_numpy(next_move_probs(games))


def next_move_probs(games: Games) -> np.ndarray:
    """``[n, 59, 61]`` float32: after each of the first :data:`N_CTX` moves, the distribution of the next
    token under uniformly random play (uniform over the next player's legal moves; pad when it is over)."""
    n = len(games.moves)
    legal = to_squares(games.legal[:, 1 : N_CTX + 1])[..., list(PLAYABLE)]  # [n, 59, 60] by token 1..60
    over = np.arange(1, N_CTX + 1)[None, :] >= games.length[:, None]
    probs = np.zeros((n, N_CTX, 61), dtype=np.float32)
    probs[..., 1:] = legal
    probs[..., 0] = over
    probs[over, 1:] = 0
    return probs / probs.sum(-1, keepdims=True)


def detokenize(tokens: np.ndarray) -> np.ndarray:
    """Tokens back to squares, -1 for padding."""
    return np.where(tokens > 0, np.asarray(PLAYABLE + (0,))[np.clip(tokens - 1, 0, 60)], -1)


def label_names() -> tuple[str, ...]:
    """Names of the per-token labels, property-major: ``mine@A1`` ... ``move@H8`` (6 × 64)."""
    return tuple(f"{prop}@{square_name(s)}" for prop in PROPERTIES for s in range(64))


def token_labels(games: Games) -> np.ndarray:
    """Per-token board properties ``[n, 60, 384]`` (bool, names from :func:`label_names`), each after
    that token's move and for the player who moves next, passes respected: the side to move after a
    pass is the side that just moved, not the one move parity names. When the game is over the
    opponent of the last mover is used (and nothing is legal). Padding tokens get no labels.

    ``mine``/``theirs``/``empty``: the board; ``legal``: squares the next player may take;
    ``flipped``: discs this move flipped; ``move``: the square this move took.
    """
    n = len(games.moves)
    labels = np.empty((n, 60, len(PROPERTIES), 64), dtype=bool)  # written in place: no temporaries
    starts = range(0, n, CHUNK)
    map_threads(lambda a: _fill_labels(_rows(games, slice(a, a + CHUNK)), labels[a : a + CHUNK]), starts)
    return labels.reshape(n, 60, -1)


def _rows(games: Games, rows: slice) -> Games:
    return Games(*(getattr(games, f.name)[rows] for f in fields(Games)))


def _fill_labels(games: Games, labels: np.ndarray) -> None:
    n = len(games.moves)
    live = np.arange(60)[None, :] < games.length[:, None]
    following = np.concatenate([games.player[:, 1:], np.full((n, 1), -1, dtype=np.int8)], axis=1)
    nxt = np.where(following >= 0, following, 1 - games.player).astype(np.int8)  # 0 black, 1 white
    after = games.boards[:, 1:]  # [n, 60, 64]
    np.equal(after, (nxt + 1)[..., None], out=labels[:, :, 0])
    np.equal(after, (2 - nxt)[..., None], out=labels[:, :, 1])
    np.equal(after, 0, out=labels[:, :, 2])
    labels[:, :, 3] = to_squares(np.concatenate([games.legal[:, 1:], np.zeros((n, 1), dtype=np.uint64)], axis=1))
    labels[:, :, 4] = to_squares(games.flipped)
    labels[:, :, 5] = False
    rows, cols = np.nonzero(live)
    labels[rows, cols, 5, games.moves[rows, cols]] = True
    labels[~live] = False


def token_batch(games: Games) -> TokenBatch:
    """The games as a token source: tokens ``[n, 60]`` and their board labels (see :func:`token_labels`)."""
    labels = token_labels(games)
    return TokenBatch(torch.from_numpy(tokenize(games.moves)), torch.from_numpy(labels), label_names(), "binary")


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
