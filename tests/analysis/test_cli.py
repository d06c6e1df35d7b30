"""The command line as a newcomer meets it: help texts, bad arguments, and a quick demo end to end."""

import json
import subprocess
import sys

import pytest

from analysis.cli import main


def test_help_lists_demo(capsys):
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_bad_arguments_give_a_message_not_a_traceback():
    for argv in (["demo", "--seed", "abc"], ["demo", "--seed", "-3"], ["nonsense"]):
        proc = subprocess.run([sys.executable, "-m", "analysis.cli", *argv], capture_output=True, text=True)
        assert proc.returncode == 2, argv
        assert "Traceback" not in proc.stderr
        assert "error" in proc.stderr


def test_quick_demo_writes_scoreboard_results_saes_and_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for word in ("variant", "L0", "FVE", "MCC", "MMCS", "F1", "dead", "topk", "jumprelu", "matryoshka_batchtopk"):
        assert word in printed
    rows = json.loads((out / "results.json").read_text())
    assert {r["source"] for r in rows} == {"synthsaebench-small", "toy-superposition"}
    assert {r["variant"] for r in rows} == {
        "standard",
        "topk",
        "batchtopk",
        "jumprelu",
        "gated",
        "matryoshka_batchtopk",
        "p_anneal",
    }
    for r in rows:
        assert 0.0 <= r["mcc"] <= 1.0 and r["l0"] >= 0.0
    for stem in ("recovery_vs_l0", "cosines-synthsaebench-small", "cosines-toy-superposition"):
        assert (out / f"{stem}.png").stat().st_size > 10_000
        assert (out / f"{stem}.pdf").stat().st_size > 1_000
    assert len(list((out / "saes").iterdir())) == len(rows)
    beliefs = json.loads((out / "beliefs" / "results.json").read_text())
    assert beliefs["config"]["process"] == "mess3" and "expected loss" in printed and "true beliefs" in printed
    for stem in ("simplex", "mse_per_layer", "emergence", "emergence_simplex"):
        assert (out / "beliefs" / f"{stem}.png").exists()
    othello = json.loads((out / "othello" / "results.json").read_text())
    assert {r["model"] for r in othello["saes"]} == {"trained", "untrained"} and "legal-move rate" in printed
    for stem in ("frontier", "probe_by_square", "latent_f1_by_square"):
        assert (out / "othello" / f"{stem}.png").exists()
    # A rerun with another seed replaces the belief run instead of refusing the folder.
    assert main(["demo", "--quick", "--no-progress", "--seed", "1", "--out", str(out)]) == 0
    assert json.loads((out / "beliefs" / "config.json").read_text())["seed"] == 1


def test_importing_the_figure_modules_leaves_the_matplotlib_backend_alone():
    """A notebook user's backend survives ``import analysis.figures`` (and the belief and game figures)."""
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); "
        "import analysis.figures, analysis.belief_figures, analysis.game_figures; "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"
