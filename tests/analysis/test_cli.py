"""The command line as a newcomer meets it: help texts, bad arguments, Ctrl-C, and a quick demo end to end."""

import json
import shlex
import subprocess
import sys

import pytest
import torch

import analysis.experiments.beliefs
import analysis.experiments.demo
import analysis.experiments.games
import games.othello
from analysis.cli import main
from analysis.experiments.demo import published_ordering
from analysis.experiments.sweep import load_results


def test_help_lists_demo(capsys):
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["demo", "--help"]) == 0
    assert "--out" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["demo", "beliefs", "games"])
def test_experiments_share_the_run_options(command, capsys):
    assert main([command, "--help"]) == 0
    shown = capsys.readouterr().out
    for option in ("--seed SEED", "--out DIR", "--no-progress", "--device DEVICE"):
        assert option in shown


def test_bad_arguments_give_a_message_not_a_traceback():
    for argv, named in (
        (["demo", "--seed", "abc"], "--seed"),
        (["demo", "--seed", "-3"], "--seed"),
        (["nonsense"], "COMMAND"),
        (["games", "chess", "--generate", "5", "--capture-weight", "0"], "--capture-weight"),
    ):
        proc = subprocess.run([sys.executable, "-m", "groundtruth_entry.cli", *argv], capture_output=True, text=True)
        assert proc.returncode == 2, argv
        assert "Traceback" not in proc.stderr
        assert f"error: argument {named}" in proc.stderr


_EXPERIMENTS = {  # command line -> (module, function) that runs it
    "demo": (analysis.experiments.demo, "run_demo"),
    "beliefs": (analysis.experiments.beliefs, "run_beliefs"),
    "games othello": (analysis.experiments.games, "run_games"),
}


class _Called(Exception):
    """Raised by a stand-in experiment once it has recorded its arguments."""


_AUTO = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("command", sorted(_EXPERIMENTS))
@pytest.mark.parametrize(
    ("flag", "expected"), [([], _AUTO), (["--device", "auto"], _AUTO), (["--device", "cpu"], torch.device("cpu"))]
)
def test_device_reaches_the_experiment(command, flag, expected, tmp_path, monkeypatch):
    module, name = _EXPERIMENTS[command]
    seen = {}

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise _Called

    monkeypatch.setattr(module, name, record)
    with pytest.raises(_Called):
        main([*command.split(), *flag, "--out", str(tmp_path), "--no-progress"])
    assert seen["device"] == expected


@pytest.mark.parametrize("command", sorted(_EXPERIMENTS))
@pytest.mark.parametrize(
    ("device", "words"),
    [
        ("tpu", "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        ("cuda:x", "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'cuda:x'"),
        *(
            []
            if torch.cuda.is_available()
            else [("cuda", "device='cuda': torch sees no CUDA device on this machine (use 'cpu' or 'auto')")]
        ),
    ],
)
def test_a_device_the_machine_lacks_is_an_argument_error_naming_it(command, device, words, tmp_path, capsys):
    assert main([*command.split(), "--device", device, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"groundtruth {command.split()[0]}: error: --device: {words}"]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("error", [TypeError, ValueError, OSError])
def test_an_error_inside_an_experiment_keeps_its_traceback(error, tmp_path, monkeypatch):
    """Only argument errors become one-line messages: a bug inside the experiment is not a usage error."""

    def broken(*args, **kwargs):
        raise error("a bug inside the experiment")

    monkeypatch.setattr(analysis.experiments.beliefs, "run_beliefs", broken)
    with pytest.raises(error, match="a bug inside"):
        main(["beliefs", "--model", "tiny", "--out", str(tmp_path), "--no-progress"])


def test_a_folder_holding_another_run_is_an_argument_error(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"process": "rrxor"}')
    assert main(["beliefs", "--model", "tiny", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "holds a run with a different config" in capsys.readouterr().err


def _interrupt_after(calls: int, real):
    """``real``, raising KeyboardInterrupt (Ctrl-C) on call number ``calls + 1``."""
    made = []

    def wrapped(*args, **kwargs):
        if len(made) == calls:
            raise KeyboardInterrupt
        made.append(None)
        return real(*args, **kwargs)

    return wrapped


def _resume_command(err: str) -> list[str]:
    """The command an interrupted run printed last, as ``main``'s argv."""
    command = shlex.split(err.strip().splitlines()[-1])
    assert command[0] == "groundtruth"
    return command[1:]


def test_ctrl_c_in_beliefs_says_what_was_saved_and_the_rerun_resumes(tmp_path, capsys, caplog, monkeypatch):
    out = tmp_path / "run"
    argv = ["beliefs", "--model", "tiny", "--n-ctx", "4", "--steps", "20", "--out", str(out), "--no-progress"]
    hmm_class = type(analysis.experiments.beliefs.process("mess3"))
    real = hmm_class.training_batches

    def batches(self, *args, **kwargs):  # the training stream: Ctrl-C while drawing the 8th batch
        return map(_interrupt_after(7, lambda b: b), real(self, *args, **kwargs))

    monkeypatch.setattr(hmm_class, "training_batches", batches)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted" in err
    assert "the model's training checkpoint at step 6 (checkpoints/latest/)" in err  # checkpoints every 2 steps
    assert "continues an unfinished model training from its last checkpoint" in err
    monkeypatch.undo()
    caplog.set_level("INFO", logger="toymodels.training")
    assert main(_resume_command(err)) == 0
    assert any("at step 6" in r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming"))
    assert (out / "results.json").exists()


def test_ctrl_c_in_games_says_which_shards_are_kept(tmp_path, capsys, monkeypatch):
    out = tmp_path / "othello"
    argv = ["games", "othello", "--generate", "30", "--shard-size", "10", "--out", str(out), "--no-progress"]
    monkeypatch.setattr(games.othello, "random_games", _interrupt_after(1, games.othello.random_games))
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{out}/: 1 shard of games" in err and "keeps these shards and writes the missing ones" in err
    monkeypatch.undo()
    assert main(_resume_command(err)) == 0
    assert len(list(out.glob("shard-*.npz"))) == 3


def test_ctrl_c_in_games_after_training_says_the_model_is_kept(tmp_path, capsys, monkeypatch):
    out = tmp_path / "othello"
    argv = ["games", "othello", "--model", "tiny", "--steps", "4", "--batch-size", "8", "--out", str(out)]
    draw = _interrupt_after(0, None)  # Ctrl-C once the model is trained, while drawing the evaluation games
    monkeypatch.setattr(analysis.experiments.games.EvalGames, "draw", draw)
    assert main([*argv, "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{out}/: the trained model (model/)" in err and "reuses the trained model and SAEs" in err
    assert _resume_command(err) == [*argv, "--no-progress"]


def test_ctrl_c_in_demo_says_finished_runs_are_kept(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    monkeypatch.setattr(analysis.experiments.demo, "run_beliefs", _interrupt_after(0, None))
    assert main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{out / 'superposition'}/: 5 finished runs (runs/)" in err
    assert f"{out / 'beliefs'}/: nothing yet" in err and f"{out / 'othello'}/: nothing yet" in err
    assert "keeps the finished SAE runs in superposition/" in err
    assert _resume_command(err) == ["demo", "--quick", "--no-progress", "--out", str(out)]


def test_ctrl_c_where_nothing_is_written_says_so(capsys, monkeypatch):
    import analysis.conformance

    monkeypatch.setattr(analysis.conformance, "check_sae", _interrupt_after(0, None))
    assert main(["check-sae", "toymodels.sae.factories:topk"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted; nothing was saved" in err


def test_quick_demo_writes_every_section_and_says_whether_the_ordering_holds(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for word in ("sae", "L0", "FVE", "MCC", "F1", "dead", "topk", "jumprelu", "matryoshka", "F1 at matched L0"):
        assert word in printed
    runs = load_results(out / "superposition")
    assert sorted(runs["sae"]) == ["batchtopk", "jumprelu", "matryoshka", "standard", "topk"]
    assert set(runs["target_l0"]) == {12} and (out / "superposition" / "results.csv").exists()
    assert published_ordering(runs)[1] in printed and "SAE board F1 on the trained model: topk" in printed
    for stem in ("metrics_vs_l0", "bars_by_target_l0"):
        assert (out / "superposition" / "figures" / f"{stem}.png").stat().st_size > 10_000
    assert all((out / "superposition" / "runs" / run_id / "sae" / "cfg.json").exists() for run_id in runs["id"])
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


def test_importing_any_module_leaves_the_matplotlib_backend_alone():
    """A notebook user's backend survives importing every module of the four packages (figures included)."""
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, matplotlib; matplotlib.use('svg')\n"
        "names = []\n"
        "for top in ('groundtruth', 'games', 'toymodels', 'analysis'):\n"
        "    package = importlib.import_module(top)\n"
        "    names += [m.name for m in pkgutil.walk_packages(package.__path__, top + '.')]\n"
        "for name in names:\n"
        "    if not name.endswith('strategies'):  # those need hypothesis, which this check does not\n"
        "        importlib.import_module(name)\n"
        "print(len(names), matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 40 and out[1] == "svg", out
