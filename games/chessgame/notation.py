"""Chess notation: standard algebraic notation (SAN) and ChessGPT's PGN strings, written from game
records and read back into them.
"""

from __future__ import annotations

from collections.abc import Sequence

import chess

from games.chessgame.position import BLACK, KING, PAWN, square_name
from games.chessgame.rules import Games, from_uci

PGN_VOCAB = " #+-.0123456789;=BKNOQRabcdefghx"  # ChessGPT's 32 characters, the PGN tokenizer's vocabulary


def san(games: Games, game: int) -> list[str]:
    """Game ``game``'s moves in standard algebraic notation, as python-chess's ``Board.san`` writes them
    (``e4``, ``Nbd7``, ``exd6``, ``O-O``, ``e8=Q+``, ``Qh4#``)."""
    out = []
    for t in range(int(games.length[game])):
        code = int(games.moves[game, t])
        src, dst, promotion = code % 64, code // 64 % 64, code // 4096
        kind = (int(games.boards[game, t, src]) - 1) % BLACK + 1
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
