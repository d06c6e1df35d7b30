"""The vectorised chess engine against python-chess, ply by ply: legal moves, game ends, SAN, labels."""

from __future__ import annotations

from pathlib import Path

import chess
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from games import get_game
from games.bitboards import to_squares
from games.chessgame import (
    LABEL_NAMES,
    PGN_VOCAB,
    UCI_VOCAB,
    Termination,
    analyse,
    detokenize_pgn,
    detokenize_uci,
    from_boards,
    from_pgn,
    from_uci,
    insufficient_material,
    pgn,
    pgn_token_batch,
    position_labels,
    random_games,
    san,
    tokenize_pgn,
)
from games.chessgame import rules as engine
from games.chessgame.tokens import tokenize_uci
from games.strategies import chess_games, chess_positions
from groundtruth.strategies import seeds

NAMES = LABEL_NAMES
COLUMN = {name: i for i, name in enumerate(NAMES)}
PIECES = ("pawn", "knight", "bishop", "rook", "queen", "king")


def expected_labels(board: chess.Board) -> np.ndarray:
    """The label vector of one position, from python-chess's own answers."""
    out = np.zeros(len(NAMES), dtype=bool)
    start = chess.Board()

    def put(name: str, square: int) -> None:
        out[COLUMN[f"{name}@{chess.square_name(square)}"]] = True

    for square in chess.SQUARES:
        piece = board.piece_at(square)
        put(
            "blank" if piece is None else f"{'white' if piece.color else 'black'}_{PIECES[piece.piece_type - 1]}",
            square,
        )
        if piece == start.piece_at(square):
            put("initial", square)
        if piece is not None:
            put("mine" if piece.color == board.turn else "theirs", square)
            for target in board.attacks(square):
                put("mine_attacks" if piece.color == board.turn else "theirs_attacks", target)
            if piece.color == board.turn and board.is_pinned(board.turn, square):
                put("pinned", square)
    for move in board.legal_moves:
        put("legal", move.to_square)
    if board.has_legal_en_passant():
        put("en_passant", board.ep_square)
    out[COLUMN["check"]] = board.is_check()
    out[COLUMN["white_to_move"]] = board.turn
    out[COLUMN["castle_white_king"]] = board.has_kingside_castling_rights(chess.WHITE)
    out[COLUMN["castle_white_queen"]] = board.has_queenside_castling_rights(chess.WHITE)
    out[COLUMN["castle_black_king"]] = board.has_kingside_castling_rights(chess.BLACK)
    out[COLUMN["castle_black_queen"]] = board.has_queenside_castling_rights(chess.BLACK)
    return out


def listed_moves(a) -> list[chess.Move]:
    """The legal moves of a one-position :class:`Analysis` as python-chess moves."""
    rows = zip(a.moves.src.tolist(), a.moves.dst.tolist(), a.moves.promotion.tolist(), strict=True)
    return [chess.Move(s, d, p or None) for s, d, p in rows]


def reference_pgn(moves: list[str]) -> str:
    text = ";"
    for t, move in enumerate(moves):
        text += ("" if t == 0 else " ") + (f"{t // 2 + 1}." if t % 2 == 0 else "") + move
    return text


def replay(games, game: int, labels: np.ndarray | None = None) -> int:
    """Play game ``game`` in python-chess, checking every position and move; returns the plies checked."""
    board = chess.Board()
    length = int(games.length[game])
    written = san(games, game)
    for t in range(length + 1):
        assert games.n_legal[game, t] == board.legal_moves.count()
        if labels is not None:
            expected = expected_labels(board)
            wrong = [NAMES[i] for i in np.flatnonzero(labels[game, t] != expected)]
            assert not wrong, (game, t, board.fen(), wrong[:10])
        if t == length:
            break
        move = chess.Move.from_uci(games.uci(game)[t])
        assert move in board.legal_moves, (game, t, board.fen(), move)
        assert written[t] == board.san(move)
        board.push(move)
    outcome = board.outcome()
    expected = "none" if outcome is None else outcome.termination.name.lower()
    assert Termination(games.termination[game]).name.lower() == expected, (game, board.fen())
    if outcome is None:
        assert length == games.moves.shape[1]  # only the ply cap stops a game that is not over
    return length + 1


def test_games_and_labels_match_python_chess_ply_by_ply() -> None:
    games = random_games(24, np.random.default_rng(0), max_plies=250)
    labels = position_labels(games)
    checked = sum(replay(games, g, labels) for g in range(len(games)))
    assert checked > 4000  # thousands of positions, every label of each
    assert set(games.termination.tolist()) >= {Termination.NONE, Termination.CHECKMATE}  # both occur


def test_capture_preferring_games_match_python_chess_and_capture_when_they_can() -> None:
    games = random_games(16, np.random.default_rng(1), max_plies=300, capture_weight=1e9)
    for g in range(len(games)):
        replay(games, g)
        board = chess.Board()
        for uci in games.uci(g):
            move = chess.Move.from_uci(uci)
            assert board.is_capture(move) == any(board.is_capture(m) for m in board.legal_moves)
            board.push(move)
    assert (games.termination > 0).mean() > 0.5  # exchanges empty the board: most games end early


@given(chess_games(capture_weight=st.sampled_from([1.0, 3.0])))
def test_random_games_are_legal_games(games) -> None:
    for g in range(len(games)):
        replay(games, g, position_labels(games))


@given(chess_positions())
def test_analysis_of_positions_matches_python_chess(board: chess.Board) -> None:
    a = analyse(*from_boards([board]))
    ours = set(listed_moves(a))
    assert ours == set(board.legal_moves)
    assert a.count.tolist() == [board.legal_moves.count()]
    assert a.moves.capture.tolist() == [board.is_capture(m) for m in listed_moves(a)]


# Positions that exercise the rare rules, each with python-chess's answer as the reference.
TRICKY = [
    "8/8/8/KPp4r/8/8/8/7k w - c6 0 2",  # en passant would uncover a check along the rank
    "8/8/8/2k5/3Pp3/8/8/4K3 b - d3 0 1",  # en passant legal; the pawn it takes gives check
    "r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1",  # both castlings for both sides
    "r3k2r/8/8/8/8/5b2/8/R3K2R w KQkq - 0 1",  # white may not castle through f1 (attacked)
    "1r2k2r/8/8/8/8/8/8/R3K2R b KQk - 0 1",  # b8 attacked does not stop queen-side castling
    "4k3/8/8/8/8/8/4q3/4K3 w - - 0 1",  # in check by a queen next to the king
    "4k3/8/8/8/1b6/8/3n4/4K3 w - - 0 1",  # double check: only the king moves
    "3qk3/8/8/8/8/8/3R4/3K4 w - - 0 1",  # a pinned rook moves along the pin only
    "1n2k3/P7/8/8/8/8/8/4K3 w - - 0 1",  # promotion with and without capture
    "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1",  # stalemate
]


@pytest.mark.parametrize("fen", TRICKY)
def test_rare_rules_match_python_chess(fen: str) -> None:
    board = chess.Board(fen)
    a = analyse(*from_boards([board]))
    ours = set(listed_moves(a))
    assert ours == set(board.legal_moves)
    assert bool(a.check[0]) == board.is_check()
    assert a.en_passant[0] == (board.ep_square if board.has_legal_en_passant() else -1)
    expected_pins = {s for s in chess.SQUARES if board.color_at(s) == board.turn and board.is_pinned(board.turn, s)}
    assert set(np.flatnonzero(to_squares(a.pinned)[0]).tolist()) == expected_pins


@pytest.mark.parametrize(
    ("fen", "dead"),
    [
        ("8/8/4k3/8/8/3K4/8/8 w - - 0 1", True),  # bare kings
        ("8/8/4k3/8/8/3K4/8/6N1 w - - 0 1", True),  # king and knight
        ("8/8/4k3/8/8/3KB3/8/2b5 w - - 0 1", True),  # bishops on one colour
        ("8/8/4k3/8/8/3KB3/8/5b2 w - - 0 1", False),  # bishops on both colours
        ("8/8/4k3/8/8/3K4/8/6NN w - - 0 1", False),  # two knights
        ("8/8/4k3/8/8/3K4/8/4q1N1 w - - 0 1", False),  # the knight cannot mate, but the queen can
        ("8/8/4k3/8/8/3K4/8/4n1N1 w - - 0 1", False),  # knight against knight: a mate exists
        ("8/8/4k3/8/8/3K4/6P1/8 w - - 0 1", False),  # a pawn
    ],
)
def test_insufficient_material_follows_python_chess(fen: str, dead: bool) -> None:
    board = chess.Board(fen)
    assert board.is_insufficient_material() == dead
    assert insufficient_material(from_boards([board])[0]).tolist() == [dead]


def test_tokenizers_write_what_python_chess_writes() -> None:
    games = random_games(6, np.random.default_rng(2), max_plies=120)
    tokens, plies = tokenize_pgn(games)
    uci = tokenize_uci(games)
    assert len(PGN_VOCAB) == 32 and len(UCI_VOCAB) == 1970 and len(set(UCI_VOCAB)) == 1970
    for g in range(len(games)):
        board, moves = chess.Board(), []
        for u in games.uci(g):
            moves.append(board.san(chess.Move.from_uci(u)))
            board.push_uci(u)
        text = reference_pgn(moves)
        assert pgn(games, g)[0] == text
        n = len(text)
        assert "".join(PGN_VOCAB[i] for i in tokens[g, :n]) == text
        assert (plies[g, n:] == -1).all()
        # A move's first character carries the position after it; the character before, the one before.
        ends = np.cumsum([len(";")] + [len(p) for p in pgn_pieces(moves)])[1:]
        firsts = ends - np.array([len(m) for m in moves])
        assert plies[g, firsts].tolist() == list(range(1, len(moves) + 1))
        assert plies[g, firsts - 1].tolist() == list(range(len(moves)))
        assert [UCI_VOCAB[i] for i in uci[g, 1 : len(moves) + 1]] == games.uci(g)
        assert uci[g, 0] == 1 and (uci[g, len(moves) + 1 :] == 0).all()


def test_pgn_plies_of_a_hand_worked_opening() -> None:
    games = random_games(4000, np.random.default_rng(8), max_plies=3)
    g = next(i for i in range(len(games)) if games.uci(i)[:2] == ["e2e4", "e7e5"] and games.uci(i)[2][:2] == "g1")
    text, plies = pgn(games, g)
    assert text in (";1.e4 e5 2.Nf3", ";1.e4 e5 2.Nh3", ";1.e4 e5 2.Ne2")
    # ";1." the start, "e4" and its space after 1.e4, "e5" and " 2." after 1...e5, "Nf3" after 2.Nf3
    assert plies == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3]


def pgn_pieces(moves: list[str]) -> list[str]:
    """The text added by each move, separator and number included; its last ``len(move)`` characters
    are the move."""
    return [("" if t == 0 else " ") + (f"{t // 2 + 1}." if t % 2 == 0 else "") + m for t, m in enumerate(moves)]


def same_games(a, b) -> bool:
    """Equal games, compared up to each game's end (batches may be padded to different widths)."""
    if not (np.array_equal(a.length, b.length) and np.array_equal(a.termination, b.termination)):
        return False
    end = int(a.length.max())
    per_ply = ("boards", "castling", "en_passant", "check", "legal", "n_legal", "pinned", "attacks")
    return all(np.array_equal(getattr(a, f)[:, : end + 1], getattr(b, f)[:, : end + 1]) for f in per_ply) and all(
        np.array_equal(getattr(a, f)[:, :end], getattr(b, f)[:, :end]) for f in ("moves", "disambiguation")
    )


@given(chess_games(capture_weight=st.sampled_from([1.0, 5.0])))
def test_transcripts_round_trip_through_both_tokenizers(games) -> None:
    texts = [pgn(games, g)[0] for g in range(len(games))]
    moves = [games.uci(g) for g in range(len(games))]
    assert detokenize_pgn(tokenize_pgn(games)[0]) == texts
    assert detokenize_uci(tokenize_uci(games)) == moves
    assert same_games(from_pgn(texts), games)
    assert same_games(from_uci(moves), games)


def test_a_known_game_is_replayed_with_its_ending() -> None:
    fools_mate = ["f2f3", "e7e5", "g2g4", "d8h4"]
    games = from_uci([fools_mate, fools_mate[:2], []])
    assert games.termination.tolist() == [Termination.CHECKMATE, Termination.NONE, Termination.NONE]
    assert games.length.tolist() == [4, 2, 0]
    assert pgn(games, 0)[0] == ";1.f3 e5 2.g4 Qh4#"
    assert from_pgn([";1.f3 e5 2.g4 Qh4#", ";1.f3 e5", ";"]).termination.tolist() == games.termination.tolist()


@pytest.mark.parametrize(
    ("call", "arg", "match"),
    [
        (from_uci, [["e2e5"]], r"games\[0\]\[0\] = 'e2e5' is not a legal move"),
        (from_uci, [["e2e4"], ["e2e4", "e7e5", "e1e3"]], r"games\[1\]\[2\] = 'e1e3'"),
        (from_uci, [["e2e4", "zz"]], r"games\[0\]\[1\] is not a UCI move"),
        (from_uci, [["f2f3", "e7e5", "g2g4", "d8h4", "e2e4"]], r"games\[0\] is over after ply 4"),
        (from_uci, [], "len"),
        (from_pgn, ["1.e4 e5"], "must start with ';'"),
        (from_pgn, [";e4"], "expected '1.'"),
        (from_pgn, [";1.e4 e5 3.Nf3"], "expected '2.'"),
        (from_pgn, [";1.e4 e5 2.Ke3"], "'Ke3' is not a legal move"),
        (from_pgn, [";1.e4 e5 2.N"], "'N' is not a legal move"),
        (from_pgn, [";1.e4 E5"], "outside the PGN vocabulary"),
    ],
)
def test_illegal_moves_and_malformed_transcripts_are_named(call, arg, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(arg)


def test_bad_tokens_and_containers_are_named() -> None:
    with pytest.raises(TypeError, match="sequence of move lists"):
        from_uci("e2e4")
    with pytest.raises(TypeError, match="sequence of strings"):
        from_pgn(";1.e4")
    with pytest.raises(ValueError, match="PGN_VOCAB"):
        detokenize_pgn(np.array([[0, 32]]))
    with pytest.raises(ValueError, match="<start>"):
        detokenize_uci(np.array([[2, 3]]))
    with pytest.raises(ValueError, match="UCI_VOCAB"):
        detokenize_uci(np.array([[1, 5000]]))


def test_uci_vocabulary_holds_every_legal_move() -> None:
    games = random_games(20, np.random.default_rng(3), max_plies=200, capture_weight=4.0)
    vocabulary = set(UCI_VOCAB)
    for g in range(len(games)):
        board = chess.Board()
        for u in games.uci(g):
            assert {m.uci() for m in board.legal_moves} <= vocabulary
            board.push_uci(u)


def test_token_batch_labels_each_token_with_the_position_it_carries() -> None:
    games = random_games(3, np.random.default_rng(4), max_plies=40)
    labels = position_labels(games)
    batch = pgn_token_batch(games)
    _, plies = tokenize_pgn(games)
    for g in range(3):
        for c in range(batch.tokens.shape[1]):
            if plies[g, c] < 0:
                assert not batch.latents[g, c].any()
            else:
                assert torch.equal(batch.latents[g, c], torch.from_numpy(labels[g, plies[g, c]]))
    uci = get_game("chess", max_plies=40).token_batch(games)
    assert torch.equal(uci.latents, torch.from_numpy(labels)) and uci.names == NAMES
    assert torch.equal(uci.tokens, torch.from_numpy(tokenize_uci(games)))


def test_padding_repeats_the_final_position_without_labels() -> None:
    games = random_games(30, np.random.default_rng(5), max_plies=300, capture_weight=1e9)
    labels = position_labels(games)
    for g in np.flatnonzero(games.length < 300):
        end = int(games.length[g])
        assert (games.boards[g, end:] == games.boards[g, end]).all()
        assert not labels[g, end + 1 :].any() and labels[g, end].any()
        assert (games.moves[g, end:] == -1).all()


@settings(max_examples=5, deadline=None)
@given(seeds())
def test_same_seed_same_games_on_any_number_of_threads(seed: int) -> None:
    first = random_games(5, np.random.default_rng(seed), max_plies=30)
    again = random_games(5, np.random.default_rng(seed), max_plies=30)
    assert all(np.array_equal(getattr(first, f), getattr(again, f)) for f in vars(first))
    chunk, threads = engine.CHUNK, torch.get_num_threads()
    try:
        engine.CHUNK = 2
        torch.set_num_threads(1)
        one = random_games(5, np.random.default_rng(seed), max_plies=30)
        torch.set_num_threads(2)
        two = random_games(5, np.random.default_rng(seed), max_plies=30)
    finally:
        engine.CHUNK = chunk
        torch.set_num_threads(threads)
    assert all(np.array_equal(getattr(one, f), getattr(two, f)) for f in vars(one))


def test_moves_are_uniform_over_the_legal_moves() -> None:
    games = random_games(4000, np.random.default_rng(6), max_plies=1)
    first = np.unique(games.moves[:, 0], return_counts=True)[1]
    assert len(first) == 20  # all 20 opening moves occur
    assert chisquare(first).pvalue > 1e-3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n": 0}, "n must"), ({"max_plies": 0}, "max_plies"), ({"capture_weight": 0.0}, "capture_weight")],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    args = {"n": 2, "rng": np.random.default_rng(0), **kwargs}
    with pytest.raises(ValueError, match=match):
        random_games(**args)


@pytest.mark.slow
def test_two_thousand_games_match_python_chess() -> None:
    games = random_games(2000, np.random.default_rng(7), max_plies=300)
    labels = position_labels(games)
    assert sum(replay(games, g, labels) for g in range(len(games))) > 300_000


def test_readme_chess_example_runs() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = readme.split("## Board games: chess")[1].split("```python")[1].split("```")[0]
    scope: dict = {}
    exec(code, scope)
    assert scope["games"].uci(0)[:3] == ["b2b4", "c7c6", "c1b2"]  # as printed there
    assert scope["real"].termination[0] == Termination.CHECKMATE
    assert scope["batch"].latents.shape[-1] == 1350
