"""A deliberately plain scalar Othello engine, square by square, to check the bitboard engine against.

A board is a list of ``size * size`` squares, row-major from A1 (0 empty, 1 black, 2 white); its size is
read from its length, so the same code plays 8 × 8 and smaller boards."""

from __future__ import annotations

import math

STEPS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]


def start(size: int = 8) -> list[int]:
    """The start: the four centre squares, white on the diagonal from the top left, black on the other."""
    board = [0] * (size * size)
    c = size // 2
    board[size * (c - 1) + c - 1] = board[size * c + c] = 2  # D4, E5 on 8 x 8
    board[size * (c - 1) + c] = board[size * c + c - 1] = 1  # D5, E4
    return board


def captured(board: list[int], player: int, square: int) -> list[int]:
    """Squares flipped if ``player`` plays ``square``; empty if the move is illegal."""
    size = math.isqrt(len(board))
    if board[square] != 0:
        return []
    other = 3 - player
    row, col = divmod(square, size)
    out = []
    for dr, dc in STEPS:
        line, r, c = [], row + dr, col + dc
        while 0 <= r < size and 0 <= c < size and board[size * r + c] == other:
            line.append(size * r + c)
            r, c = r + dr, c + dc
        if line and 0 <= r < size and 0 <= c < size and board[size * r + c] == player:
            out.extend(line)
    return sorted(out)


def legal(board: list[int], player: int) -> list[int]:
    return [s for s in range(len(board)) if captured(board, player, s)]


def play(board: list[int], player: int, square: int) -> list[int]:
    flipped = captured(board, player, square)
    assert flipped, f"illegal move {square} for player {player}"
    board = list(board)
    for s in [square, *flipped]:
        board[s] = player
    return board
