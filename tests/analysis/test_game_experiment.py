"""The Othello experiment end to end at toy size, its legal-move rate against hand-built predictions,
and the `groundtruth games` command."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from analysis.cli import main
from analysis.experiments.games import (
    EvalGames,
    GameConfig,
    board_scores,
    game_inputs,
    games_report,
    legal_move_rate,
    run_games,
)
from games import get_game

TINY = GameConfig(
    model="tiny",
    steps=20,
    batch_size=16,
    eval_games=24,
    sae_games=24,
    sae_width=32,
    sae_steps=10,
    saes=(("topk", 4), ("standard", 1.0)),
)


@pytest.mark.parametrize("game", ["othello", "othello6", "chess"])
def test_legal_move_rate_counts_top1_predictions_against_the_rules(game: str) -> None:
    cfg = GameConfig(game=game, max_plies=30)
    games = EvalGames.draw(cfg, 6, seed=0)
    n, t = games.inputs.shape
    position, token = games.legal // games.d_vocab, games.legal % games.d_vocab
    good = torch.zeros(n * t, games.d_vocab)
    good[position, token] = torch.rand(len(token), generator=torch.Generator().manual_seed(0)) + 1  # legal moves only
    bad = torch.rand(n * t, games.d_vocab, generator=torch.Generator().manual_seed(1))
    bad[position, token] = -1.0  # everything but the legal moves
    assert legal_move_rate(good.reshape(n, t, -1), games) == 1.0
    assert legal_move_rate(bad.reshape(n, t, -1), games) == 0.0
    # The legal sets themselves, against the engines' own answers for one position per game.
    if game != "chess":
        geometry = get_game(game).geometry
        for g in range(n):
            names = [f"legal@{geometry.square_names[s]}" for s in geometry.playable]
            expected = games.labels[g, 3][[games.names.index(name) for name in names]]
            legal = torch.zeros(geometry.n_moves + 1, dtype=torch.bool)
            legal[token[position == g * t + 3]] = True
            assert torch.equal(legal[1:], expected)
    else:
        import chess as pychess

        from games.chessgame import UCI_VOCAB

        for g in range(n):
            board = pychess.Board()
            for move in games.inputs[g, 1:4].tolist():
                board.push_uci(UCI_VOCAB[move])
            assert {UCI_VOCAB[k] for k in token[position == g * t + 3].tolist()} == {m.uci() for m in board.legal_moves}


@pytest.mark.parametrize("game", ["othello", "chess"])
def test_sae_training_inputs_skip_the_labels_but_not_the_games(game: str) -> None:
    cfg = replace(TINY, game=game, max_plies=12)
    assert torch.equal(game_inputs(cfg, 20, 7), EvalGames.draw(cfg, 20, 7).inputs)


def test_board_f1_scores_the_pieces_and_the_whole_board_separately() -> None:
    games = EvalGames.draw(TINY, 200, seed=3)
    columns = {c: [i for i, n in enumerate(games.names) if n.startswith(c + "@")] for c in ("mine", "theirs", "empty")}
    # Latents that are exactly the empty squares: a perfect whole board on empty cells, no pieces at all.
    empty_only = board_scores(games.labels[..., columns["empty"]].float(), games, TINY)
    assert empty_only["reconstruction_f1"] == 0.0 and empty_only["reconstruction_f1_with_empty"] > 0.5
    # Latents that are exactly the discs: the pieces are reconstructed, the empty cells are not.
    discs = board_scores(games.labels[..., columns["mine"] + columns["theirs"]].float(), games, TINY)
    assert discs["reconstruction_f1"] > 0.99 and discs["reconstruction_f1_with_empty"] < discs["reconstruction_f1"]


def test_a_tiny_chess_run_scores_piece_classes(tmp_path) -> None:
    cfg = replace(TINY, game="chess", max_plies=16, saes=(("topk", 4),))
    results = run_games(cfg, tmp_path, progress=False)
    assert results["board"][0] == "blank" and len(results["board"]) == 13 and results["pieces"] == results["board"][1:]
    row = results["saes"][0]
    assert all(name.split("@")[0] in results["board"] for name in row["f1_by_property"])
    assert len(row["reconstruction_by_position"]) == 16
    assert (tmp_path / "latent_f1_by_square.png").exists() and "Chess" in games_report(results)


def test_a_tiny_othello6_run_scores_its_36_squares(tmp_path) -> None:
    results = run_games(replace(TINY, game="othello6", saes=(("topk", 4),)), tmp_path, progress=False)
    assert results["transformer"]["n_ctx"] == 31 and results["transformer"]["d_vocab"] == 33
    assert len(results["trained"]["probe_by_square"][results["hook"]]) == 36
    row = results["saes"][0]
    assert len(row["reconstruction_by_position"]) == 31 and "empty@C3" not in row["f1_by_property"]  # the centre
    assert {name.split("@")[1] for name in row["f1_by_property"]} <= set(get_game("othello6").board.squares)
    assert (tmp_path / "probe_by_square.png").exists() and "on 36 squares" in games_report(results)


def test_a_tiny_run_writes_results_figures_and_reuses_its_model(tmp_path) -> None:
    results = run_games(TINY, tmp_path, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["hook"] == results["hook"] and len(saved["saes"]) == 4  # 2 SAEs x trained/random init
    for name in ("frontier", "probe_by_square", "latent_f1_by_square"):
        assert (tmp_path / f"{name}.png").exists() and (tmp_path / f"{name}.pdf").exists()
    assert saved["pieces"] == ["mine", "theirs"]  # board reconstruction leaves the empty squares out
    for row in saved["saes"]:
        assert 0 <= row["coverage"] <= 1 and 0 <= row["reconstruction_f1"] <= 1
        assert 0 <= row["reconstruction_f1_with_empty"] <= 1
        assert len(row["reconstruction_by_position"]) == get_game("othello").n_ctx
        assert "empty@D4" not in row["f1_by_property"]  # never-empty centre squares are not scored
    topk = [r for r in saved["saes"] if r["variant"] == "topk"]
    assert all(r["l0"] <= 4 for r in topk)
    assert (
        0 <= saved["trained"]["legal_move_rate"] <= 1 and len(saved["trained"]["probe_by_square"][saved["hook"]]) == 64
    )
    assert all(0 <= f1 <= 1 for f1 in saved["probe_board_f1"].values())
    assert "linear probe" in games_report(results)
    again = run_games(TINY, tmp_path, progress=False)
    assert again["train_minutes"] is None  # loaded, not retrained
    assert again["saes"] == saved["saes"]  # the same SAEs, loaded, score the same
    # Another hook and other SAE settings reuse the model; their SAEs go next to the first ones.
    other = run_games(replace(TINY, hook="blocks.0.mlp.hook_post", sae_steps=5), tmp_path, progress=False)
    assert other["train_minutes"] is None and other["hook"] == "blocks.0.mlp.hook_post"
    assert "blocks.0.mlp.hook_post" in other["trained"]["probe"]
    assert len(list((tmp_path / "saes").iterdir())) == 2
    with pytest.raises(ValueError, match="different config"):
        run_games(GameConfig(model="tiny", steps=21), tmp_path, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "huge"}, "model must be"),
        ({"hook": "blocks.2.hook_resid_post", "model": "tiny"}, "hook must be"),
        ({"hook": "blocks.0.attn.hook_pattern", "model": "tiny"}, "hook must be"),
        ({"saes": (("dense", 1.0),)}, "variant must be"),
        ({"saes": (("topk", 0),)}, "knob"),
        ({"eval_games": 1}, "eval_games"),
        ({"game": "go"}, "game must be"),
        ({"max_plies": 0}, "max_plies"),
    ],
)
def test_bad_configs_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GameConfig(**kwargs)


def test_games_command_generates_shards_and_explains_what_is_missing(tmp_path, capsys) -> None:
    out = tmp_path / "chess"
    assert (
        main(
            [
                "games",
                "chess",
                "--generate",
                "30",
                "--shard-size",
                "16",
                "--max-plies",
                "10",
                "--no-progress",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.glob("shard-*.npz")) == ["shard-00000.npz", "shard-00001.npz"]
    assert main(["games", "othello", "--generate", "0", "--out", str(tmp_path / "o")]) == 2
    assert "argument --generate: must be an integer >= 1" in capsys.readouterr().err
    assert main(["games", "othello", "--model", "tiny", "--hook", "blocks.9.hook_resid_post"]) == 2
    assert "hook must be one of" in capsys.readouterr().err


def test_a_device_the_machine_lacks_is_refused_before_anything_is_written(tmp_path) -> None:
    with pytest.raises(ValueError, match="'tpu'"):
        run_games(TINY, tmp_path / "run", progress=False, device="tpu")
    assert not (tmp_path / "run").exists()
