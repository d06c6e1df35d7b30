"""The two chess tokenizers: one token per move (UCI, what the chess :class:`~games.chessgame.Chess` game
and its experiment train on) and one per character of ChessGPT's PGN strings.
"""

from __future__ import annotations

import numpy as np

from games.chessgame.notation import PGN_VOCAB, pgn
from games.chessgame.position import analyse, move_code, square_name
from games.chessgame.rules import Games
from games.protocol import PAD
from groundtruth.checks import check_int


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


START_TOKEN = 1  # begins every game, so that token t carries the position after t plies
UCI_VOCAB = ("<pad>", "<start>", *_uci_vocabulary())  # 1,970 tokens: PAD, START_TOKEN, then the moves
_UCI_ID = np.zeros(4096 * 6, dtype=np.int64)  # move code -> token
_UCI_ID[[move_code(m) for m in UCI_VOCAB[2:]]] = np.arange(2, len(UCI_VOCAB))
_CHAR_ID = np.full(128, -1, dtype=np.int64)  # ASCII code -> PGN token
_CHAR_ID[[ord(c) for c in PGN_VOCAB]] = np.arange(len(PGN_VOCAB))


def tokenize_uci(games: Games) -> np.ndarray:
    """Tokens ``[n, T + 1]``: ``<start>``, then one token per move (indices into :data:`UCI_VOCAB`),
    :data:`~games.protocol.PAD` after the end; token ``t`` carries the position after ``t`` plies, like
    the rows of ``boards``."""
    first = np.full((len(games), 1), START_TOKEN, dtype=np.int64)
    return np.concatenate([first, np.where(games.moves >= 0, _UCI_ID[np.maximum(games.moves, 0)], PAD)], axis=1)


def detokenize_uci(tokens: np.ndarray) -> list[list[str]]:
    """Move tokens ``[n, T + 1]`` (indices into :data:`UCI_VOCAB`, ``<start>`` first) back to UCI move
    lists, stopping at the first ``<pad>``; the inverse of :func:`tokenize_uci`."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.size and (tokens.min() < 0 or tokens.max() >= len(UCI_VOCAB)):
        raise ValueError(f"tokens must be [n, T] indices into UCI_VOCAB, got shape {tokens.shape}")
    if tokens.size and (tokens[:, 0] != START_TOKEN).any():
        raise ValueError(f"every row must begin with <start> (1), got first tokens {tokens[:, 0].tolist()[:8]}")
    out = []
    for row in tokens[:, 1:].tolist():
        end = row.index(PAD) if PAD in row else len(row)
        if START_TOKEN in row[:end]:
            raise ValueError(f"<start> (1) inside a game: {row[:end]}")
        out.append([UCI_VOCAB[k] for k in row[:end]])
    return out


def legal_tokens(games: Games, n_ctx: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every legal move, as a UCI token, at every position after ``t < n_ctx`` plies (default: all) of every
    game that is not over there: arrays ``(game, t, token)``, one row per legal move. These are what a model
    reading :func:`tokenize_uci` may legally predict after token ``t``."""
    cols = games.boards.shape[1] if n_ctx is None else min(n_ctx, games.boards.shape[1])
    g, t = np.nonzero(np.arange(cols)[None, :] < games.length[:, None])
    a = analyse(games.boards[g, t], t % 2 == 0, games.castling[g, t], games.en_passant[g, t].astype(np.int64))
    code = a.moves.src + 64 * a.moves.dst + 4096 * a.moves.promotion.astype(np.int64)
    return g[a.moves.game], t[a.moves.game], _UCI_ID[code]


def tokenize_pgn(games: Games, n_ctx: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Character tokens ``[n, n_ctx]`` of :func:`~games.chessgame.notation.pgn` (indices into
    :data:`PGN_VOCAB`) and the ply each character carries ``[n, n_ctx]``; games are cut at ``n_ctx``
    (default: the longest) and padded with spaces carrying ply -1."""
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


def detokenize_pgn(tokens: np.ndarray) -> list[str]:
    """Character tokens ``[n, n_ctx]`` (indices into :data:`PGN_VOCAB`) back to strings, trailing
    padding removed; the inverse of :func:`tokenize_pgn` for games that fit the context."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.size and (tokens.min() < 0 or tokens.max() >= len(PGN_VOCAB)):
        raise ValueError(f"tokens must be [n, n_ctx] indices into PGN_VOCAB, got shape {tokens.shape}")
    chars = np.frombuffer(PGN_VOCAB.encode(), dtype=np.uint8)[tokens]
    return [row.tobytes().decode().rstrip(" ") for row in chars]
