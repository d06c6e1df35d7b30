"""The bitboard Othello engine against a plain scalar reference, move for move, on the 8 × 8 board and on 6 × 6."""

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
    CHUNK,
    Othello,
    OthelloGeometry,
    SquareProperty,
    flips,
    legal_moves,
    random_games,
    square_name,
    start,
)
from games.strategies import othello_games, othello_positions, othello_prefixes

sys.path.insert(0, str(Path(__file__).parent))
import reference_othello as ref  # noqa: E402

OTHELLO, OTHELLO6 = get_game("othello"), get_game("othello6")
each_game = pytest.mark.parametrize("game", [OTHELLO, OTHELLO6], ids=lambda g: g.name)
# The engine on every board it takes: the two games' and the smallest.
each_size = pytest.mark.parametrize(
    "geometry", [OthelloGeometry(n) for n in (8, 6, 4)], ids=lambda g: f"{g.size}x{g.size}"
)


def _bits(board: list[int], player: int, geometry: OthelloGeometry) -> np.uint64:
    return np.uint64(sum(1 << int(geometry.bits[s]) for s in range(len(board)) if board[s] == player))


def _names(geometry: OthelloGeometry, squares) -> list[str]:
    return [geometry.square_names[s] for s in squares]


def replay(games, g: int, geometry: OthelloGeometry) -> None:
    """Replay game ``g`` on the reference engine, checking every move, pass, board and the end."""
    board, player = ref.start(geometry.size), 1
    length, m = int(games.length[g]), geometry.n_moves
    for t in range(length):
        assert games.boards[g, t].tolist() == board, f"board before move {t}"
        if not ref.legal(board, player):  # a pass: the other player must be able to move
            player = 3 - player
        assert int(games.player[g, t]) == player - 1, f"player of move {t}"
        move = int(games.moves[g, t])
        assert move in ref.legal(board, player), f"move {t} ({geometry.square_names[move]}) is illegal"
        legal, flipped = (
            geometry.squares(games.legal[g, t : t + 1])[0],
            geometry.squares(games.flipped[g, t : t + 1])[0],
        )
        assert np.flatnonzero(legal).tolist() == ref.legal(board, player)
        assert np.flatnonzero(flipped).tolist() == ref.captured(board, player, move)
        board = ref.play(board, player, move)
        player = 3 - player
    assert not ref.legal(board, 1) and not ref.legal(board, 2), "the game stopped while a player could move"
    assert games.boards[g, length:].tolist() == [board] * (m + 1 - length)
    assert games.moves[g, length:].tolist() == [-1] * (m - length)
    assert int(games.score[g]) == board.count(1) - board.count(2)


@each_size
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_games_follow_the_rules(geometry, seed):
    games = random_games(8, np.random.default_rng(seed), geometry)
    for g in range(8):
        replay(games, g, geometry)


@pytest.mark.slow
@each_game
def test_ten_thousand_games_follow_the_rules(game):
    games = game.random_games(10_000, np.random.default_rng(0))
    for g in range(10_000):
        replay(games, g, game.geometry)


def test_hundreds_of_six_by_six_games_follow_the_rules():
    # More than the Hypothesis examples, in the default run (3 s); the slow run checks 10,000 of each size.
    games = OTHELLO6.random_games(300, np.random.default_rng(11))
    for g in range(300):
        replay(games, g, OTHELLO6.geometry)


@each_size
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_legal_moves_and_flips_match_the_reference(geometry, data):
    # Positions from random games, from both sides' point of view.
    seed, plies = data.draw(st.integers(0, 2**32 - 1)), data.draw(st.integers(0, geometry.n_moves - 1))
    games = random_games(3, np.random.default_rng(seed), geometry)
    for g in range(3):
        _check_against_reference(games.boards[g, plies].tolist(), geometry)


def _check_against_reference(board: list[int], geometry: OthelloGeometry) -> None:
    """legal_moves and flips on ``board``, for both players, against the reference; nothing off the board."""
    squares = np.arange(geometry.n_squares)
    for player in (1, 2):
        mover, opponent = _bits(board, player, geometry), _bits(board, 3 - player, geometry)
        legal = legal_moves(np.array([mover]), np.array([opponent]), geometry)
        assert legal[0] & ~geometry.mask == 0
        assert np.flatnonzero(geometry.squares(legal)[0]).tolist() == ref.legal(board, player)
        flipped = flips(np.full(len(squares), mover), np.full(len(squares), opponent), squares, geometry)
        assert (flipped & ~geometry.mask == 0).all()
        for s, bits in zip(squares, geometry.squares(flipped), strict=True):
            assert np.flatnonzero(bits).tolist() == ref.captured(board, player, s)


@each_size
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_legal_moves_and_flips_match_the_reference_on_any_board(geometry, data):
    # Any mix of discs, reachable or not: lines that run into every edge and corner, where a shift could
    # wrap around or (on a small board) leave it through the unused columns and rows.
    board = data.draw(st.lists(st.sampled_from([0, 0, 1, 2]), min_size=geometry.n_squares, max_size=geometry.n_squares))
    _check_against_reference(board, geometry)


@each_size
@pytest.mark.parametrize("direction", [(0, 1), (1, 0), (1, 1), (1, -1)], ids=["row", "column", "diagonal", "anti"])
def test_the_longest_lines_are_legal_and_flip_every_disc_between(geometry, direction):
    # A line from edge to edge: the mover's disc at one end, the opponent's on all size - 2 squares between,
    # the other end empty. Playing there flips them all, from either end.
    n, (dr, dc) = geometry.size, direction
    first = (0, 0 if dc >= 0 else n - 1)
    line = [n * (first[0] + i * dr) + first[1] + i * dc for i in range(n)]
    for ends in (line, line[::-1]):
        board = [0] * geometry.n_squares
        board[ends[0]] = 1
        for s in ends[1:-1]:
            board[s] = 2
        mover, opponent = np.array([_bits(board, 1, geometry)]), np.array([_bits(board, 2, geometry)])
        assert np.flatnonzero(geometry.squares(legal_moves(mover, opponent, geometry))[0]).tolist() == [ends[-1]]
        flipped = geometry.squares(flips(mover, opponent, np.array([ends[-1]]), geometry))[0]
        assert np.flatnonzero(flipped).tolist() == sorted(ends[1:-1])


@pytest.mark.parametrize(
    ("game", "black", "white", "openings"),
    [
        (OTHELLO, ["D5", "E4"], ["D4", "E5"], ["C4", "D3", "E6", "F5"]),
        (OTHELLO6, ["C4", "D3"], ["C3", "D4"], ["B3", "C2", "D5", "E4"]),
    ],
    ids=["othello", "othello6"],
)
def test_start_and_openings(game, black, white, openings):
    geometry = game.geometry
    mover, opponent = start(1, geometry)
    assert _names(geometry, np.flatnonzero(geometry.squares(mover)[0])) == black
    assert _names(geometry, np.flatnonzero(geometry.squares(opponent)[0])) == white
    first = np.flatnonzero(geometry.squares(legal_moves(mover, opponent, geometry))[0])
    assert _names(geometry, first) == openings
    assert _names(geometry, geometry.centre) == sorted(black + white)
    assert len(geometry.playable) == geometry.n_moves and not set(geometry.centre) & set(geometry.playable)


def test_bitboard_helpers():
    bits = np.array([np.uint64(2**64 - 1), np.uint64(0), np.uint64(5), np.uint64(2**63)])
    assert popcount(bits).tolist() == [64, 0, 2, 1]
    assert (from_squares(to_squares(bits)) == bits).all()
    assert np.flatnonzero(to_squares(bits)[3]).tolist() == [63]


@pytest.mark.parametrize(
    ("size", "n_moves", "n_ctx", "last", "mask"),
    [(8, 60, 59, "H8", 2**64 - 1), (6, 32, 31, "F6", 0x3F3F_3F3F_3F3F), (4, 12, 11, "D4", 0x0F0F_0F0F)],
)
def test_geometry_derives_every_size_dependent_table(size, n_moves, n_ctx, last, mask):
    geometry = OthelloGeometry(size)
    s = size * size
    assert (geometry.n_squares, geometry.n_moves, geometry.n_ctx, int(geometry.mask)) == (s, n_moves, n_ctx, mask)
    assert geometry.square_names[0] == "A1" and geometry.square_names[-1] == last == square_name(s - 1, size)
    assert geometry.bits.tolist() == [8 * r + c for r in range(size) for c in range(size)]
    assert (geometry.square_of_bit[geometry.bits] == np.arange(s)).all() and (geometry.square_of_bit >= 0).sum() == s
    assert len(geometry.token_names) == n_moves + 1 and len(geometry.label_names) == 6 * s
    assert geometry.board.squares == geometry.square_names and len(geometry.board.rows) == size
    assert "".join(geometry.board.row_names) == "ABCDEFGH"[:size] and geometry.board.column_names[-1] == str(size)
    with pytest.raises(ValueError, match="read-only"):
        geometry.tokens[0] = 1


@pytest.mark.parametrize(("size", "error"), [(5, ValueError), (2, ValueError), (10, ValueError), (6.0, TypeError)])
def test_geometry_refuses_boards_that_are_odd_or_do_not_fit_a_bitboard(size, error):
    with pytest.raises(error, match="size must be"):
        OthelloGeometry(size)


def test_othello6_is_registered_and_declares_its_board():
    six = OTHELLO6
    assert isinstance(six, Othello) and six != OTHELLO and six.geometry.size == 6 and OTHELLO.geometry.size == 8
    assert (six.n_ctx, six.n_tokens, len(six.label_names), len(six.board.squares)) == (31, 33, 216, 36)
    assert six.label_names[0] == "mine@A1" and six.label_names[-1] == "move@F6"
    assert six.board.row_names == tuple("ABCDEF") and six.board.column_names == tuple("123456")


@each_size
def test_a_forced_pass(geometry):
    # White to move with no legal move: black's discs cannot be outflanked, so white passes and black moves again.
    board = [0] * geometry.n_squares
    board[0], board[1], board[2] = 1, 2, 0  # A1 black, A2 white, A3 empty
    board[-1] = 2  # the far corner (H8, F6) white
    assert ref.legal(board, 2) == []
    mover, opponent = np.array([_bits(board, 2, geometry)]), np.array([_bits(board, 1, geometry)])
    assert int(legal_moves(mover, opponent, geometry)[0]) == 0
    black = np.flatnonzero(geometry.squares(legal_moves(opponent, mover, geometry))[0]).tolist()
    assert black == ref.legal(board, 1) == [2]


@each_game
def test_games_have_passes_and_early_ends_and_fill_the_board_at_most(game):
    geometry = game.geometry
    games = game.random_games(2000, np.random.default_rng(1))
    m, s = geometry.n_moves, geometry.n_squares
    assert games.moves.shape == games.player.shape == games.legal.shape == (2000, m)
    assert games.boards.shape == (2000, m + 1, s)
    passes = (games.player[:, 1:] == games.player[:, :-1]) & (games.player[:, 1:] >= 0)
    assert passes.any(), "2,000 random games should include a pass"
    assert (games.length < m).any() and (games.length == m).mean() > 0.5 and games.length.max() == m
    assert set(np.unique(games.moves[games.moves >= 0])) <= set(geometry.playable)
    assert ((games.legal & ~geometry.mask) == 0).all() and ((games.flipped & ~geometry.mask) == 0).all()


@each_game
def test_random_games_are_reproducible_and_bad_sizes_raise(game):
    a, b = game.random_games(5, np.random.default_rng(3)), game.random_games(5, np.random.default_rng(3))
    assert np.array_equal(a.moves, b.moves) and np.array_equal(a.boards, b.boards)
    with pytest.raises(ValueError, match="n must be an integer"):
        game.random_games(0, np.random.default_rng(0))


def test_readme_othello_example_runs():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = readme.split("## Board games: Othello")[1].split("```python")[1].split("```")[0]
    scope: dict = {}
    exec(code, scope)
    assert scope["games"].boards.shape == (10_000, 61, 64)
    assert [square_name(int(s)) for s in scope["games"].moves[0, :4]] == ["D3", "E3", "F4", "C5"]  # as printed there


def reference_labels(games, g: int, geometry: OthelloGeometry) -> np.ndarray:
    """Labels of game ``g`` from the reference engine: after each move, for the player who moves next."""
    m, n_squares = geometry.n_moves, geometry.n_squares
    board, player, out = ref.start(geometry.size), 1, np.zeros((m, len(SquareProperty), n_squares), dtype=bool)
    for t in range(int(games.length[g])):
        if not ref.legal(board, player):
            player = 3 - player
        move = int(games.moves[g, t])
        out[t, SquareProperty.FLIPPED, ref.captured(board, player, move)] = True
        out[t, SquareProperty.MOVE, move] = True
        board = ref.play(board, player, move)
        nxt = 3 - player if ref.legal(board, 3 - player) or not ref.legal(board, player) else player
        for s in range(n_squares):
            out[t, SquareProperty.MINE, s] = board[s] == nxt
            out[t, SquareProperty.THEIRS, s] = board[s] == 3 - nxt
            out[t, SquareProperty.EMPTY, s] = board[s] == 0
        out[t, SquareProperty.LEGAL, ref.legal(board, nxt)] = True
        player = 3 - player
    return out.reshape(m, -1)


@each_game
def test_labels_match_the_reference_including_after_passes(game):
    games = game.random_games(400, np.random.default_rng(5))
    m, n_squares = game.geometry.n_moves, game.geometry.n_squares
    passes = (games.player[:, 1:] == games.player[:, :-1]) & (games.player[:, 1:] >= 0)
    with_pass = np.flatnonzero(passes.any(1))
    assert with_pass.size > 0
    labels = game.labels(games)
    assert labels.shape == (400, m, 6 * n_squares)
    for g in [*with_pass[:3], 0, 1]:
        np.testing.assert_array_equal(labels[g], reference_labels(games, g, game.geometry), err_msg=f"game {g}")
    live = np.arange(m)[None, :] < games.length[:, None]
    board = labels.reshape(400, m, 6, n_squares)[..., :3, :].sum(2)
    assert (board[live] == 1).all() and not labels[~live].any()  # one of mine/theirs/empty per square


@pytest.mark.parametrize(
    ("game", "tokens"),
    [
        (OTHELLO, {"<pad>": 0, "A1": 1, "D3": 27, "D6": 28, "H8": 60}),
        (OTHELLO6, {"<pad>": 0, "A1": 1, "C2": 14, "C5": 15, "F6": 32}),  # C3, C4 (the centre) skipped
    ],
    ids=["othello", "othello6"],
)
def test_tokens_are_othellogpts_and_token_batch(game, tokens):
    # The playable squares in order, the centre skipped; 0 pads.
    m, n_squares = game.geometry.n_moves, game.geometry.n_squares
    assert {name: game.token_names.index(name) for name in tokens} == tokens
    assert game.n_tokens == m + 1 and game.n_ctx == m - 1
    games = game.random_games(50, np.random.default_rng(6))
    encoded = game.tokenize(games)
    assert encoded.min() >= 0 and encoded.max() <= m and ((encoded == 0) == (games.moves < 0)).all()
    played = games.moves[0, : games.length[0]]
    assert [game.token_names[k] for k in encoded[0, : games.length[0]]] == _names(game.geometry, played)
    batch = game.token_batch(games)
    assert batch.tokens.shape == (50, m) and batch.latents.shape == (50, m, 6 * n_squares) and batch.kind == "binary"
    last = game.geometry.square_names[-1]
    assert batch.names[0] == "mine@A1" and batch.names[-1] == f"move@{last}" and len(set(batch.names)) == 6 * n_squares


@pytest.mark.parametrize(
    ("game", "names"),
    [(OTHELLO, ["D3", "C5", "F6", "F5", "E6", "E3"]), (OTHELLO6, ["D5", "E5", "F5", "D6", "E6", "F6"])],
    ids=["othello", "othello6"],
)
def test_detokenize_replays_a_transcript_as_the_reference_plays_it(game, names):
    # Legal openings, checked move by move on the reference; 6 x 6's runs into the board's last row and column.
    geometry = game.geometry
    board, player = ref.start(geometry.size), 1
    boards = [board]
    for name in names:
        square = geometry.square_names.index(name)
        assert square in ref.legal(board, player)
        board, player = ref.play(board, player, square), 3 - player
        boards.append(board)
    games = game.detokenize(np.array([[game.token_names.index(n) for n in names]]))
    assert games.length.tolist() == [6] and games.boards[0, :7].tolist() == boards
    assert (games.boards[0, 7:] == games.boards[0, 6]).all() and games.player[0, :6].tolist() == [0, 1] * 3
    assert int(games.score[0]) == boards[-1].count(1) - boards[-1].count(2)


@each_game
def test_detokenize_names_illegal_moves_and_moves_after_the_end(game):
    a1 = game.token_names.index("A1")
    with pytest.raises(ValueError, match=r"move 0 of game 0 \(A1\) is not a legal move"):
        game.detokenize(np.array([[a1]]))
    games = game.random_games(50, np.random.default_rng(2))
    g = int(np.argmin(games.length))  # a game that ends before its last possible move
    assert games.length[g] < game.geometry.n_moves
    tokens = game.tokenize(games)[g : g + 1].copy()
    tokens[0, games.length[g]] = tokens[0, 0]
    with pytest.raises(ValueError, match=f"game 0 is over after move {games.length[g]}"):
        game.detokenize(tokens)
    with pytest.raises(ValueError, match="after padding"):
        game.detokenize(np.array([[27, 0, 28]]))
    with pytest.raises(ValueError, match=f"indices into {game.name}'s token_names"):
        game.detokenize(np.array([[game.n_tokens]]))
    with pytest.raises(ValueError, match=rf"tokens must be \[n, <= {game.geometry.n_moves}\]"):
        game.detokenize(np.ones((1, game.geometry.n_moves + 1), dtype=np.int64))


@each_game
def test_chunks_give_the_same_games_on_any_number_of_threads(game):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        parallel = game.random_games(CHUNK + 300, np.random.default_rng(9))
        labels_parallel = game.labels(parallel)
        torch.set_num_threads(1)
        serial = game.random_games(CHUNK + 300, np.random.default_rng(9))
        labels_serial = game.labels(serial)
    finally:
        torch.set_num_threads(before)
    for field in ("moves", "player", "boards", "legal", "flipped", "length", "score"):
        np.testing.assert_array_equal(getattr(parallel, field), getattr(serial, field), err_msg=field)
    np.testing.assert_array_equal(labels_parallel, labels_serial)
    assert parallel.moves.shape == (CHUNK + 300, game.geometry.n_moves)


@settings(max_examples=15, deadline=None)
@given(data=st.data(), size=st.sampled_from([8, 6]))
def test_strategies_draw_legal_positions_and_prefixes(data, size):
    games = othello_games(n_games=st.just(1), size=st.just(size))
    board, player = data.draw(othello_positions(games))
    assert len(board) == size * size and ref.legal(board.tolist(), player + 1), "the player to move has a legal move"
    moves, boards = data.draw(othello_prefixes(games))
    assert len(boards) == len(moves) + 1 and boards[0].tolist() == ref.start(size)
    for t, move in enumerate(moves):  # each board follows from the one before by one legal move
        before, after = boards[t].tolist(), boards[t + 1].tolist()
        assert any(int(move) in ref.legal(before, p) and ref.play(before, p, int(move)) == after for p in (1, 2)), (
            f"move {t}"
        )


@settings(max_examples=15, deadline=None)
@given(games=othello_games(size=st.sampled_from([8, 6])))
def test_each_move_places_one_disc_and_turns_exactly_the_flipped_ones(games):
    # Invariants of every move on either board, from the record alone: the square taken was empty and is
    # the mover's, the flipped discs were the opponent's and are the mover's, nothing else changes.
    geometry = OthelloGeometry(int(np.sqrt(games.boards.shape[-1])))
    for g in range(len(games)):
        for t in range(int(games.length[g])):
            before, after = games.boards[g, t], games.boards[g, t + 1]
            mine, move = int(games.player[g, t]) + 1, int(games.moves[g, t])
            flipped = geometry.squares(games.flipped[g, t : t + 1])[0]
            assert before[move] == 0 and after[move] == mine and flipped.any()
            assert (before[flipped] == 3 - mine).all() and (after[flipped] == mine).all()
            unchanged = ~flipped
            unchanged[move] = False
            assert np.array_equal(before[unchanged], after[unchanged])
            assert (after != 0).sum() == 5 + t  # 4 discs at the start, one more per move
        final = games.boards[g, -1]
        assert games.score[g] == (final == 1).sum() - (final == 2).sum()


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
