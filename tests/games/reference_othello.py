"""A deliberately plain scalar Othello engine, square by square, to check the bitboard engine against."""

from __future__ import annotations

STEPS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]


def start() -> list[int]:
    """64 squares, row-major from A1: 0 empty, 1 black, 2 white."""
    board = [0] * 64
    board[27] = board[36] = 2  # D4, E5
    board[28] = board[35] = 1  # D5, E4
    return board


def captured(board: list[int], player: int, square: int) -> list[int]:
    """Squares flipped if ``player`` plays ``square``; empty if the move is illegal."""
    if board[square] != 0:
        return []
    other = 3 - player
    row, col = divmod(square, 8)
    out = []
    for dr, dc in STEPS:
        line, r, c = [], row + dr, col + dc
        while 0 <= r < 8 and 0 <= c < 8 and board[8 * r + c] == other:
            line.append(8 * r + c)
            r, c = r + dr, c + dc
        if line and 0 <= r < 8 and 0 <= c < 8 and board[8 * r + c] == player:
            out.extend(line)
    return sorted(out)


def legal(board: list[int], player: int) -> list[int]:
    return [s for s in range(64) if captured(board, player, s)]


def play(board: list[int], player: int, square: int) -> list[int]:
    flipped = captured(board, player, square)
    assert flipped, f"illegal move {square} for player {player}"
    board = list(board)
    for s in [square, *flipped]:
        board[s] = player
    return board
