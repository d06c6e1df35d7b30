"""The local-against-e2e experiment: the matched comparison against hand-worked curves, the config's
checks, and tiny runs on both models that write what the report reads."""

import json
import math

import pytest

from analysis.experiments.e2e import E2EConfig, main, matched, report, run_e2e
from toymodels.superposition import ToyModelConfig


def test_matched_interpolates_log_l0_in_log_output_over_the_shared_range():
    rows = [
        {"objective": "local", "output": 0.01, "l0": 10.0, "alive": 60},
        {"objective": "local", "output": 0.1, "l0": 1.0, "alive": 40},
        {"objective": "e2e", "output": 0.001, "l0": 4.0, "alive": 30},
        {"objective": "e2e", "output": 0.1, "l0": 0.25, "alive": 10},
    ]
    got = {(m["objective"], round(m["output"], 6)): m for m in matched(rows, levels=2)}
    assert set(got) == {("local", 0.01), ("e2e", 0.01), ("local", 0.1), ("e2e", 0.1)}
    # e2e at 0.01 is halfway (in log output) from 0.001 to 0.1: L0 = sqrt(4 * 0.25) = 1, alive = 20
    assert got[("e2e", 0.01)]["l0"] == pytest.approx(1.0)
    assert got[("e2e", 0.01)]["alive"] == pytest.approx(20.0)
    assert got[("local", 0.1)]["l0"] == pytest.approx(1.0)
    middle = matched(rows, levels=3)[2:4]  # output sqrt(0.001): local L0 sqrt(10 * 1)
    assert middle[0]["output"] == pytest.approx(math.sqrt(0.001)) and middle[0]["l0"] == pytest.approx(math.sqrt(10))
    disjoint = rows[:2] + [{"objective": "e2e", "output": 0.5, "l0": 1.0, "alive": 3}]
    assert matched(disjoint) == []


def test_config_checks_name_the_field():
    with pytest.raises(ValueError, match="model must be one of .*'gpt2'"):
        E2EConfig(model="gpt2")
    with pytest.raises(ValueError, match="e2e coefficients must be finite and >= 0, got -0.1"):
        E2EConfig(e2e=(-0.1,))
    with pytest.raises(ValueError, match="steps"):
        E2EConfig(steps=0)
    assert E2EConfig(model="toy").grid("e2e+ds") == ()  # the toy model has no downstream layer


def test_tiny_toy_run_writes_rows_and_the_matched_comparison(tmp_path):
    cfg = E2EConfig(
        model="toy",
        d_sae=8,
        steps=20,
        batch_size=64,
        n_eval=200,
        local=(0.1, 1.0),
        e2e=(0.1, 1.0),
        toy=ToyModelConfig(n_features=6, d_hidden=3, steps=50, batch_size=64),
    )
    rows = run_e2e(cfg, tmp_path)
    assert [(r["objective"], r["coefficient"]) for r in rows] == [
        ("local", 0.1),
        ("local", 1.0),
        ("e2e", 0.1),
        ("e2e", 1.0),
    ]
    assert all(0 <= r["alive"] <= 8 and 0 <= r["l0"] <= 8 and 0 <= r["mcc"] <= 1 for r in rows)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == rows and saved["matched"] == matched(rows)
    assert E2EConfig.from_json((tmp_path / "config.json").read_text()) == cfg
    assert "at matched output loss" in report(rows)


def test_tiny_mess3_run_from_the_command_line(tmp_path, capsys):
    main(
        [
            "--model",
            "mess3",
            "--out",
            str(tmp_path),
            "--steps",
            "3",
            "--local",
            "0.1",
            "--e2e",
            "0.1",
            "--e2e-ds",
            "0.1",
        ]
    )
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["objective"] for r in rows] == ["local", "e2e", "e2e+ds"]
    for r in rows:
        assert r["output"] >= 0 and math.isfinite(r["ce_increase"]) and -1 <= r["belief_r2"] <= 1
        assert r["belief_r2_activations"] > 0.5  # the hook holds the beliefs linearly
    assert "belief R² from the activations themselves" in capsys.readouterr().out
