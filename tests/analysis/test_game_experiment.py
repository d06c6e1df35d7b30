"""The Othello experiment end to end at toy size, its legal-move rate against hand-built predictions,
and the `groundtruth games` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.cli import main
from analysis.game_experiment import EvalGames, GameConfig, games_report, legal_move_rate, run_games
from games import othello

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


def test_legal_move_rate_counts_top1_predictions_against_the_rules() -> None:
    games = EvalGames.draw(6, seed=0)
    legal = games.labels[..., [games.names.index(f"legal@{othello.square_name(s)}") for s in range(64)]]
    going = legal.any(-1)
    good = torch.full((*games.inputs.shape, 61), -1.0)
    bad = torch.full((*games.inputs.shape, 61), -1.0)
    for g, t in zip(*np.nonzero(going.numpy()), strict=True):
        squares = np.flatnonzero(legal[g, t].numpy())
        good[g, t, othello.tokenize(squares[-1:])[0]] = 1.0  # a legal move
        occupied = [s for s in othello.PLAYABLE if not legal[g, t, s]]
        bad[g, t, othello.tokenize(np.array(occupied[:1]))[0]] = 1.0  # a move that is not legal
    assert legal_move_rate(good, games) == 1.0
    assert legal_move_rate(bad, games) == 0.0
    pad = torch.zeros(*games.inputs.shape, 61)
    pad[..., 0] = 1.0  # predicting the end of the game is never a legal move
    assert legal_move_rate(pad, games) == 0.0


def test_soft_targets_are_uniform_over_the_legal_next_moves() -> None:
    tokens, probs = next(othello.training_batches(8, seed=1, soft=True))
    games = othello.random_games(8, np.random.default_rng(1))  # the same games the stream drew
    assert torch.equal(tokens, torch.from_numpy(othello.tokenize(games.moves))[:, : othello.N_CTX])
    played = torch.from_numpy(othello.tokenize(games.moves))[:, 1:]
    assert (probs.gather(-1, played[..., None]) > 0).all()  # every move played was possible
    nonzero = probs > 0
    assert torch.allclose(probs.sum(-1), torch.ones(8, othello.N_CTX))
    assert torch.allclose(probs[nonzero], (1 / nonzero.sum(-1, keepdim=True)).expand_as(probs)[nonzero])


def test_a_tiny_run_writes_results_figures_and_reuses_its_model(tmp_path) -> None:
    results = run_games(TINY, tmp_path, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["hook"] == results["hook"] and len(saved["saes"]) == 4  # 2 SAEs x trained/random init
    for name in ("frontier", "probe_by_square", "latent_f1_by_square"):
        assert (tmp_path / f"{name}.png").exists() and (tmp_path / f"{name}.pdf").exists()
    for row in saved["saes"]:
        assert 0 <= row["coverage"] <= 1 and 0 <= row["reconstruction_f1"] <= 1
        assert len(row["reconstruction_by_position"]) == othello.N_CTX
        assert "empty@D4" not in row["f1_by_property"]  # never-empty centre squares are not scored
    topk = [r for r in saved["saes"] if r["variant"] == "topk"]
    assert all(r["l0"] <= 4 for r in topk)
    assert (
        0 <= saved["trained"]["legal_move_rate"] <= 1 and len(saved["trained"]["probe_by_square"][saved["hook"]]) == 64
    )
    assert "linear probe" in games_report(results)
    again = run_games(TINY, tmp_path, progress=False)
    assert again["train_minutes"] is None  # loaded, not retrained
    assert again["saes"] == saved["saes"]  # the same SAEs, loaded, score the same
    with pytest.raises(ValueError, match="different config"):
        run_games(GameConfig(model="tiny", steps=21), tmp_path, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "huge"}, "model must be"),
        ({"layer": 2, "model": "tiny"}, "layer must be"),
        ({"saes": (("dense", 1.0),)}, "variant must be"),
        ({"saes": (("topk", 0),)}, "knob"),
        ({"eval_games": 1}, "eval_games"),
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
    assert main(["games", "chess", "--out", str(tmp_path / "c")]) == 2
    assert "not built yet" in capsys.readouterr().err
    assert main(["games", "othello", "--generate", "0", "--out", str(tmp_path / "o")]) == 2
    assert "n_games must be" in capsys.readouterr().err
