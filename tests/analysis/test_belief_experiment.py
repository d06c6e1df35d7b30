"""`groundtruth beliefs` end to end on a tiny model: results, figures, the cached model, and the CLI."""

import json

import pytest
import torch

from analysis.cli import main
from analysis.experiments import beliefs as belief_experiment
from analysis.experiments.beliefs import BeliefConfig, run_beliefs

TINY = BeliefConfig(
    process="mess3", model="tiny", n_ctx=4, steps=30, batch_size=64, snapshots=3, shuffles=5, sae_width=16, sae_k=2
)


def test_run_writes_results_figures_and_reuses_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr(belief_experiment, "EMERGENCE_SEQUENCES", 50)  # exercise the subset path
    results = run_beliefs(TINY, tmp_path, progress=False)
    hooks = results["trained"]["hooks"]
    final = results["trained"]["final_hook"]
    assert set(hooks) == {"blocks.0.hook_resid_pre", final, "ln_final.hook_normalized", "concat", "sae codes"}
    assert results["exhaustive"] and results["n_sequences"] == 3**4
    assert results["optimal_loss"] < results["trained"]["expected_loss"] < results["untrained"]["expected_loss"]
    for row in hooks.values():
        assert row["mse"] >= 0 and row["r2"] <= 1 and len(row["mse_by_position"]) == 4
    assert hooks[final]["shuffled_r2"] < 0.2 < hooks[final]["r2"]
    assert [r["step"] for r in results["emergence"]] == [0, 10, 20, 30]
    # the snapshots at steps 0 and 30 are the random-init and trained models, scored on 50 of the 81 sequences
    assert results["emergence"][0]["final_r2"] == pytest.approx(results["untrained"]["hooks"][final]["r2"], abs=0.05)
    assert results["emergence"][-1]["final_r2"] == pytest.approx(hooks[final]["r2"], abs=0.05)
    for stem in ("simplex", "mse_per_layer", "emergence", "emergence_simplex"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "results.json").read_text())["trained"]["hooks"][final]["r2"] == hooks[final]["r2"]

    before = (tmp_path / "model").stat().st_mtime_ns
    again = run_beliefs(TINY, tmp_path, progress=False)  # loads, does not train
    assert again["train_minutes"] is None and again["trained"]["hooks"][final] == hooks[final]
    assert (tmp_path / "model").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="different config"):
        run_beliefs(BeliefConfig(process="rrxor", model="tiny"), tmp_path, progress=False)


@pytest.mark.parametrize(
    "changes, field", [({"process": "nope"}, "process"), ({"model": "huge"}, "model"), ({"steps": 0}, "steps")]
)
def test_bad_config_raises_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        BeliefConfig(**changes)


def test_cli_prints_the_tables(tmp_path, capsys):
    argv = ["beliefs", "--process", "rrxor", "--model", "tiny", "--n-ctx", "4", "--steps", "20"]
    assert main([*argv, "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for text in ("expected loss", "optimum", "concat", "R² shuffled", "by position", "true beliefs", "results.json"):
        assert text in printed
    assert main([*argv, "--steps", "0", "--out", str(tmp_path / "bad")]) == 2  # a message, not a traceback
    assert "steps" in capsys.readouterr().err


def test_a_device_the_machine_lacks_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="'tpu'"):
        run_beliefs(TINY, tmp_path / "run", progress=False, device="tpu")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_run_trained_on_the_cpu_is_reused_on_cuda(tmp_path):
    """The device is not part of the run: the model (and the SAE's final checkpoint) written on the CPU load
    on CUDA, and score the same up to float rounding."""
    cpu = run_beliefs(TINY, tmp_path, progress=False, device="cpu")
    cuda = run_beliefs(TINY, tmp_path, progress=False, device="cuda")
    assert cuda["train_minutes"] is None  # loaded, not trained again
    assert cuda["trained"]["expected_loss"] == pytest.approx(cpu["trained"]["expected_loss"], rel=1e-4)
    final = cpu["trained"]["final_hook"]
    for hook in (final, "sae codes"):
        assert cuda["trained"]["hooks"][hook]["r2"] == pytest.approx(cpu["trained"]["hooks"][hook]["r2"], abs=1e-3)
