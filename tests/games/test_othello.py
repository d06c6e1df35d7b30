"""The bitboard Othello engine against a plain scalar reference, move for move."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from games import get_game
from games.bitboards import from_squares, popcount, to_squares
from games.othello import (
    CENTRE,
    CHUNK,
    N_CTX,
    PLAYABLE,
    SquareProperty,
    flips,
    legal_moves,
    random_games,
    square_name,
    start,
)
from games.strategies import othello_positions, othello_prefixes

sys.path.insert(0, str(Path(__file__).parent))
import reference_othello as ref  # noqa: E402

OTHELLO = get_game("othello")


def _bits(board: list[int], player: int) -> np.uint64:
    return np.uint64(sum(1 << s for s in range(64) if board[s] == player))


def replay(games, g: int) -> None:
    """Replay game ``g`` on the reference engine, checking every move, pass, board and the end."""
    board, player = ref.start(), 1
    length = int(games.length[g])
    for t in range(length):
        assert games.boards[g, t].tolist() == board, f"board before move {t}"
        if not ref.legal(board, player):  # a pass: the other player must be able to move
            player = 3 - player
        assert int(games.player[g, t]) == player - 1, f"player of move {t}"
        move = int(games.moves[g, t])
        assert move in ref.legal(board, player), f"move {t} ({square_name(move)}) is illegal"
        board = ref.play(board, player, move)
        player = 3 - player
    assert not ref.legal(board, 1) and not ref.legal(board, 2), "the game stopped while a player could move"
    assert games.boards[g, length:].tolist() == [board] * (61 - length)
    assert games.moves[g, length:].tolist() == [-1] * (60 - length)
    assert int(games.score[g]) == board.count(1) - board.count(2)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_games_follow_the_rules(seed):
    games = random_games(8, np.random.default_rng(seed))
    for g in range(8):
        replay(games, g)


@pytest.mark.slow
def test_ten_thousand_games_follow_the_rules():
    games = random_games(10_000, np.random.default_rng(0))
    for g in range(10_000):
        replay(games, g)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), plies=st.integers(0, 59))
def test_legal_moves_and_flips_match_the_reference(seed, plies):
    # Positions from random games, from both sides' point of view.
    games = random_games(3, np.random.default_rng(seed))
    for g in range(3):
        board = games.boards[g, plies].tolist()
        for player in (1, 2):
            mover, opponent = _bits(board, player), _bits(board, 3 - player)
            got = to_squares(legal_moves(np.array([mover]), np.array([opponent])))[0]
            assert np.flatnonzero(got).tolist() == ref.legal(board, player)
            squares = np.arange(64)
            flipped = to_squares(flips(np.full(64, mover), np.full(64, opponent), squares))
            for s in range(64):
                assert np.flatnonzero(flipped[s]).tolist() == ref.captured(board, player, s)


def test_start_and_openings():
    mover, opponent = start(1)
    assert np.flatnonzero(to_squares(mover)[0]).tolist() == [28, 35]  # black: D5, E4
    assert np.flatnonzero(to_squares(opponent)[0]).tolist() == [27, 36]  # white: D4, E5
    first = np.flatnonzero(to_squares(legal_moves(mover, opponent))[0])
    assert [square_name(s) for s in first] == ["C4", "D3", "E6", "F5"]
    assert len(PLAYABLE) == 60 and not set(CENTRE) & set(PLAYABLE)
    bits = np.array([np.uint64(2**64 - 1), np.uint64(0), np.uint64(5), np.uint64(2**63)])
    assert popcount(bits).tolist() == [64, 0, 2, 1]
    assert (from_squares(to_squares(bits)) == bits).all()
    assert np.flatnonzero(to_squares(bits)[3]).tolist() == [63]


def test_a_forced_pass():
    # White to move with no legal move: black's discs cannot be outflanked, so white passes and black moves again.
    board = [0] * 64
    board[0], board[1], board[2] = 1, 2, 0  # A1 black, A2 white, A3 empty
    board[63] = 2  # H8 white
    assert ref.legal(board, 2) == []
    mover, opponent = np.array([_bits(board, 2)]), np.array([_bits(board, 1)])
    assert int(legal_moves(mover, opponent)[0]) == 0
    assert np.flatnonzero(to_squares(legal_moves(opponent, mover))[0]).tolist() == ref.legal(board, 1) == [2]


def test_games_have_passes_and_early_ends():
    games = random_games(2000, np.random.default_rng(1))
    passes = (games.player[:, 1:] == games.player[:, :-1]) & (games.player[:, 1:] >= 0)
    assert passes.any(), "2,000 random games should include a pass"
    assert (games.length < 60).any() and (games.length == 60).mean() > 0.5
    assert set(np.unique(games.moves[games.moves >= 0])) <= set(PLAYABLE)


def test_random_games_are_reproducible_and_bad_sizes_raise():
    a, b = random_games(5, np.random.default_rng(3)), random_games(5, np.random.default_rng(3))
    assert np.array_equal(a.moves, b.moves) and np.array_equal(a.boards, b.boards)
    with pytest.raises(ValueError, match="n must be an integer"):
        random_games(0, np.random.default_rng(0))


def test_readme_othello_example_runs():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = readme.split("## Board games: Othello")[1].split("```python")[1].split("```")[0]
    scope: dict = {}
    exec(code, scope)
    assert scope["games"].boards.shape == (10_000, 61, 64)
    assert [square_name(int(s)) for s in scope["games"].moves[0, :4]] == ["D3", "E3", "F4", "C5"]  # as printed there


def reference_labels(games, g: int) -> np.ndarray:
    """Labels of game ``g`` from the reference engine: after each move, for the player who moves next."""
    board, player, out = ref.start(), 1, np.zeros((60, len(SquareProperty), 64), dtype=bool)
    for t in range(int(games.length[g])):
        if not ref.legal(board, player):
            player = 3 - player
        move = int(games.moves[g, t])
        out[t, SquareProperty.FLIPPED, ref.captured(board, player, move)] = True
        out[t, SquareProperty.MOVE, move] = True
        board = ref.play(board, player, move)
        nxt = 3 - player if ref.legal(board, 3 - player) or not ref.legal(board, player) else player
        for s in range(64):
            out[t, SquareProperty.MINE, s] = board[s] == nxt
            out[t, SquareProperty.THEIRS, s] = board[s] == 3 - nxt
            out[t, SquareProperty.EMPTY, s] = board[s] == 0
        out[t, SquareProperty.LEGAL, ref.legal(board, nxt)] = True
        player = 3 - player
    return out.reshape(60, 384)


def test_labels_match_the_reference_including_after_passes():
    games = random_games(400, np.random.default_rng(5))
    passes = (games.player[:, 1:] == games.player[:, :-1]) & (games.player[:, 1:] >= 0)
    with_pass = np.flatnonzero(passes.any(1))
    assert with_pass.size > 0
    labels = OTHELLO.labels(games)
    for g in [*with_pass[:3], 0, 1]:
        np.testing.assert_array_equal(labels[g], reference_labels(games, g), err_msg=f"game {g}")
    live = np.arange(60)[None, :] < games.length[:, None]
    board = labels.reshape(400, 60, 6, 64)[..., :3, :].sum(2)
    assert (board[live] == 1).all() and not labels[~live].any()  # one of mine/theirs/empty per square


def test_tokens_are_othellogpts_and_token_batch():
    games = random_games(50, np.random.default_rng(6))
    tokens = OTHELLO.tokenize(games)
    assert tokens.min() >= 0 and tokens.max() <= 60 and ((tokens == 0) == (games.moves < 0)).all()
    played = games.moves[0, : games.length[0]]
    assert [OTHELLO.token_names[k] for k in tokens[0, : games.length[0]]] == [square_name(s) for s in played]
    # A1, D3, D6 and H8 are tokens 1, 27, 28 and 60: the playable squares in order, the centre skipped.
    assert [OTHELLO.token_names.index(s) for s in ("<pad>", "A1", "D3", "D6", "H8")] == [0, 1, 27, 28, 60]
    batch = OTHELLO.token_batch(games)
    assert batch.tokens.shape == (50, 60) and batch.latents.shape == (50, 60, 384) and batch.kind == "binary"
    assert batch.names[0] == "mine@A1" and batch.names[-1] == "move@H8" and len(set(batch.names)) == 384
    assert N_CTX == 59


def test_detokenize_replays_a_transcript_as_the_reference_plays_it():
    names = ["D3", "C5", "F6", "F5", "E6", "E3"]  # a legal opening, checked move by move on the reference
    board, player = ref.start(), 1
    boards = [board]
    for name in names:
        square = "ABCDEFGH".index(name[0]) * 8 + int(name[1]) - 1
        assert square in ref.legal(board, player)
        board, player = ref.play(board, player, square), 3 - player
        boards.append(board)
    games = OTHELLO.detokenize(np.array([[OTHELLO.token_names.index(n) for n in names]]))
    assert games.length.tolist() == [6] and games.boards[0, :7].tolist() == boards
    assert (games.boards[0, 7:] == games.boards[0, 6]).all() and games.player[0, :6].tolist() == [0, 1] * 3
    assert int(games.score[0]) == boards[-1].count(1) - boards[-1].count(2)


def test_detokenize_names_illegal_moves_and_moves_after_the_end():
    a1 = OTHELLO.token_names.index("A1")
    with pytest.raises(ValueError, match=r"move 0 of game 0 \(A1\) is not a legal move"):
        OTHELLO.detokenize(np.array([[a1]]))
    games = random_games(50, np.random.default_rng(2))
    g = int(np.argmin(games.length))  # a game that ends before move 60
    tokens = OTHELLO.tokenize(games)[g : g + 1].copy()
    tokens[0, games.length[g]] = tokens[0, 0]
    with pytest.raises(ValueError, match=f"game 0 is over after move {games.length[g]}"):
        OTHELLO.detokenize(tokens)
    with pytest.raises(ValueError, match="after padding"):
        OTHELLO.detokenize(np.array([[27, 0, 28]]))
    with pytest.raises(ValueError, match="indices into TOKEN_NAMES"):
        OTHELLO.detokenize(np.array([[61]]))


def test_chunks_give_the_same_games_on_any_number_of_threads():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        parallel = random_games(CHUNK + 300, np.random.default_rng(9))
        labels_parallel = OTHELLO.labels(parallel)
        torch.set_num_threads(1)
        serial = random_games(CHUNK + 300, np.random.default_rng(9))
        labels_serial = OTHELLO.labels(serial)
    finally:
        torch.set_num_threads(before)
    for field in ("moves", "player", "boards", "legal", "flipped", "length", "score"):
        np.testing.assert_array_equal(getattr(parallel, field), getattr(serial, field), err_msg=field)
    np.testing.assert_array_equal(labels_parallel, labels_serial)
    assert parallel.moves.shape == (CHUNK + 300, 60)


@settings(max_examples=15, deadline=None)
@given(position=othello_positions(), prefix=othello_prefixes())
def test_strategies_draw_legal_positions_and_prefixes(position, prefix):
    board, player = position
    assert ref.legal(board.tolist(), player + 1), "the player about to move has a legal move"
    moves, boards = prefix
    assert len(boards) == len(moves) + 1 and boards[0].tolist() == ref.start()
    for t, move in enumerate(moves):  # each board follows from the one before by one legal move
        before, after = boards[t].tolist(), boards[t + 1].tolist()
        assert any(int(move) in ref.legal(before, p) and ref.play(before, p, int(move)) == after for p in (1, 2)), (
            f"move {t}"
        )


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 2**64 - 1), min_size=1, max_size=20), st.floats(0, 1, exclude_max=True))
def test_uniform_square_picks_the_kth_set_square(bitboards: list[int], u: float) -> None:
    from games.othello import _uniform_square

    class Fixed:  # stands in for the generator: the same uniform for every row
        def random(self, n: int) -> np.ndarray:
            return np.full(n, u)

    bits = np.array(bitboards, dtype=np.uint64)
    chosen = _uniform_square(bits, Fixed())
    for value, square in zip(bitboards, chosen.tolist(), strict=True):
        squares = [i for i in range(64) if value >> i & 1]
        assert square == squares[int(u * len(squares))]
