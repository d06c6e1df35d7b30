"""The Game protocol, checked by one suite on every registered game (and on a user's tic-tac-toe written
beside it); the registry; and the names every token source, hidden-Markov ones included, shares."""

from __future__ import annotations

import inspect
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from games import GAMES, PAD, Game, game_options, get_game, protocol, register_game
from games.othello import Othello
from games.strategies import games_of
from groundtruth import HMM
from groundtruth.processes import mess3
from groundtruth.strategies import seeds

sys.path.insert(0, str(Path(__file__).parent))
from tictactoe import TicTacToe  # noqa: E402

SOURCES = [*(get_game(name) for name in sorted(GAMES)), TicTacToe()]
each_game = pytest.mark.parametrize("game", SOURCES, ids=lambda g: g.name)


def same_games(a, b) -> bool:
    return type(a) is type(b) and all(np.array_equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))


@each_game
def test_declarations_agree(game: Game) -> None:
    assert game.n_tokens == len(game.token_names) == len(set(game.token_names)) and "pad" in game.token_names[PAD]
    assert len(set(game.label_names)) == len(game.label_names)
    board = game.board
    squares = {f"{c}@{s}" for c in board.classes for s in board.squares}
    assert squares <= set(game.label_names)  # every (class, square) is a label column
    assert board.pieces == tuple(c for c in board.classes if c != board.empty) and board.empty in board.classes
    assert sorted(s for row in board.rows for s in row) == list(range(len(board.squares)))
    assert isinstance(game.n_ctx, int) and game.n_ctx >= 1


@each_game
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_tokens_spell_the_games_and_detokenize_replays_them(game: Game, data) -> None:
    games = data.draw(games_of(game))
    tokens = game.tokenize(games)
    assert isinstance(games, game.Games) and tokens.dtype == np.int64 and tokens.shape[0] == len(games)
    assert tokens.shape[1] >= game.n_ctx + 1 and ((tokens >= 0) & (tokens < game.n_tokens)).all()
    padded = tokens == PAD
    assert (padded[:, :-1] <= padded[:, 1:]).all()  # padding only after a game's end
    assert same_games(game.detokenize(tokens), games)


@each_game
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_labels_describe_every_token_and_the_board_one_class_per_square(game: Game, data) -> None:
    games = data.draw(games_of(game))
    tokens, labels = game.tokenize(games), game.labels(games)
    assert labels.dtype == bool and labels.shape == (*tokens.shape, len(game.label_names))
    assert np.array_equal(labels.any(-1), tokens != PAD)  # labelled exactly where a token is not padding
    column = {name: i for i, name in enumerate(game.label_names)}
    for square in game.board.squares:
        classes = labels[..., [column[f"{c}@{square}"] for c in game.board.classes]]
        assert (classes.sum(-1) == (tokens != PAD)).all(), square  # one class per square, on every real token
    batch = game.token_batch(games)
    assert torch.equal(batch.tokens, torch.from_numpy(tokens)) and torch.equal(batch.latents, torch.from_numpy(labels))
    assert batch.names == game.label_names and batch.kind == "binary"


@each_game
@settings(max_examples=5, deadline=None)
@given(seed=seeds(), batch_size=st.integers(1, 2))
def test_training_batches_hold_the_games_and_soft_targets_are_uniform_over_the_legal_moves(
    game: Game, seed: int, batch_size: int
) -> None:
    games = game.random_games(batch_size, np.random.default_rng(seed))  # the games of the streams' first batch
    tokens = torch.from_numpy(game.tokenize(games))
    hard = next(game.training_batches(batch_size, seed=seed))
    assert torch.equal(hard, tokens[:, : game.n_ctx + 1])
    inputs, probs = next(game.training_batches(batch_size, soft=True, seed=seed))
    assert torch.equal(inputs, tokens[:, : game.n_ctx])
    assert probs.dtype == torch.float32 and probs.shape == (batch_size, game.n_ctx, game.n_tokens)
    torch.testing.assert_close(probs.sum(-1), torch.ones(batch_size, game.n_ctx))
    legal = torch.zeros_like(probs, dtype=torch.bool)
    g, t, token = (torch.from_numpy(a) for a in game.legal_tokens(games))
    legal[g, t, token] = True
    assert len(g) == legal.sum()  # no legal move is listed twice
    targets = tokens[:, 1 : game.n_ctx + 1]
    going = targets != PAD  # a next move exists exactly where the game goes on
    assert torch.equal(legal.any(-1), going)
    assert legal.gather(-1, targets[..., None]).squeeze(-1)[going].all()  # the move played was legal
    support = torch.where(going[..., None], legal, torch.nn.functional.one_hot(torch.tensor(PAD), game.n_tokens).bool())
    assert torch.equal(probs > 0, support)
    uniform = (1 / support.sum(-1, keepdim=True)).expand_as(probs)
    torch.testing.assert_close(probs[support], uniform[support])


@each_game
def test_a_shorter_context_cuts_every_stream_and_a_longer_one_is_refused(game: Game) -> None:
    n_ctx = min(3, game.n_ctx)
    hard = next(game.training_batches(2, n_ctx, seed=1))
    inputs, probs = next(game.training_batches(2, n_ctx, soft=True, seed=1))
    assert hard.shape == (2, n_ctx + 1) and inputs.shape == (2, n_ctx) and probs.shape == (2, n_ctx, game.n_tokens)
    full = next(game.training_batches(2, soft=True, seed=1))[1]
    assert torch.equal(probs, full[:, :n_ctx])
    with pytest.raises(ValueError, match="n_ctx must be at most"):
        next(game.training_batches(2, game.n_ctx + 1))


def test_token_sources_share_the_names_and_signatures_of_their_operations() -> None:
    def signature(f) -> list:
        return [(p.name, p.kind) for p in inspect.signature(f).parameters.values()]

    assert signature(HMM.training_batches) == signature(Game.training_batches)
    hmm = mess3()
    for source in (hmm, *SOURCES):
        assert all(hasattr(source, name) for name in ("token_names", "n_tokens", "label_names", "labels"))
        hard = next(source.training_batches(4, 5, seed=0))
        inputs, probs = next(source.training_batches(4, 5, soft=True, seed=0))
        assert hard.shape == (4, 6) and hard.dtype == torch.int64 and inputs.shape == (4, 5)
        assert probs.shape == (4, 5, source.n_tokens) and probs.dtype == torch.float32
        torch.testing.assert_close(probs.sum(-1), torch.ones(4, 5))


@pytest.fixture
def registry():
    """The registry as it was before the test: a test's games stay out of the others'."""
    before = dict(GAMES)
    yield
    protocol._GAMES.clear()
    protocol._GAMES.update(before)


def test_a_users_game_is_registered_with_one_call_and_found_everywhere_by_name(registry, tmp_path) -> None:
    from analysis.experiments.games import GameConfig
    from games.datasets import read_shards, write_shards

    assert register_game(TicTacToe) is TicTacToe and GAMES["tictactoe"] is TicTacToe
    assert register_game(TicTacToe) is TicTacToe  # registering again is harmless
    assert get_game("tictactoe") == TicTacToe() and game_options("tictactoe") == ()
    cfg = GameConfig(game="tictactoe", model="tiny")
    assert cfg.transformer().d_vocab == 10 and cfg.transformer().n_ctx == 8 and cfg.pieces == ("mine", "theirs")
    write_shards("tictactoe", 5, tmp_path, shard_size=3, seed=2, progress=False)
    shards = list(read_shards(tmp_path))
    assert [len(s) for s in shards] == [3, 2]
    assert same_games(shards[1], TicTacToe().random_games(2, np.random.default_rng([2, 1])))


def test_the_registry_refuses_incomplete_unnamed_and_clashing_games(registry) -> None:
    class Unfinished(Game):
        name = "unfinished"

    class Unnamed(Othello):
        pass

    class Impostor(Othello):
        name = "chess"

    with pytest.raises(TypeError, match="does not define .*detokenize"):
        register_game(Unfinished)
    with pytest.raises(TypeError, match="must declare its own name"):
        register_game(Unnamed)
    with pytest.raises(ValueError, match="already registered by games.chessgame.game.Chess"):
        register_game(Impostor)
    with pytest.raises(TypeError, match="needs a Game subclass"):
        register_game(object)
    assert sorted(GAMES) == ["chess", "othello", "othello6"]


def test_games_are_made_by_name_with_their_options() -> None:
    assert get_game("chess", max_plies=12).n_ctx == 12 and game_options("chess") == ("max_plies", "capture_weight")
    assert get_game("othello").n_ctx == 59 and game_options("othello") == ()
    assert get_game("othello6").n_ctx == 31 and game_options("othello6") == ()
    with pytest.raises(ValueError, match=r"game must be one of \['chess', 'othello', 'othello6'\], got 'go'"):
        get_game("go")
    with pytest.raises(ValueError, match="othello takes no options, got \\['max_plies'\\]"):
        get_game("othello", max_plies=3)
    with pytest.raises(ValueError, match="chess takes the options max_plies, capture_weight, got \\['depth'\\]"):
        get_game("chess", depth=3)
    with pytest.raises(ValueError, match="max_plies"):
        get_game("chess", max_plies=0)
    exchanges = get_game("chess", max_plies=4, capture_weight=2.0)
    with pytest.raises(ValueError, match="capture_weight is 2.0"):  # soft targets are uniform play's
        exchanges.next_token_probs(exchanges.random_games(1, np.random.default_rng(0)))


def test_readme_protocol_example_runs() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = readme.split("## Board games: the `Game` protocol")[1].split("```python")[1].split("```")[0]
    scope: dict = {}
    exec(code, scope)
    chess = scope["chess"]
    assert (chess.token_names[:3], chess.label_names[0], chess.n_ctx) == (("<pad>", "<start>", "a1b1"), "blank@a1", 100)
    assert scope["labels"].shape == (8, 101, 1350) and scope["probs"].shape == (64, 100, 1970)  # as printed there
