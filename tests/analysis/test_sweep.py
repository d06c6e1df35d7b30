"""Sweeps: the file is validated before anything runs, runs are deterministic units with atomic folders,
killed sweeps resume, failures stay with their run, and results do not depend on how runs are grouped
or how many workers run them."""

from __future__ import annotations

import json
import textwrap
import tomllib
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from analysis.cli import main
from analysis.experiments.sweep import SweepError, load_sweep, parse_sweep, plan_tasks, run_id, run_sweep
from analysis.experiments.sweep import run as sweep_run
from analysis.sweeps import SHIPPED, shipped_path
from groundtruth.threads import torch_threads
from toymodels.sae import SAEConfig, load_sae, saved_config
from toymodels.sae.training import Trainer

SOURCE = """
[sources.tiny]
sparse = { d = 16, n_features = 32, target_l0 = 3.0, seed = 5 }
"""


def sweep_text(grid: str, train: str = "steps = 30\nbatch_size = 64\nn_eval = 500", extra: str = "") -> str:
    return f"[train]\n{train}\n{SOURCE}\n{extra}\n[grid]\n{textwrap.dedent(grid)}"


SMALL = sweep_text(
    """
    source = "tiny"
    sae = ["topk", "standard"]
    width = 24
    target_l0 = [2, 4]
    seed = [0, 1]
    """
)


# ------------------------------------------------------------------------------------------------
# the file
# ------------------------------------------------------------------------------------------------


def test_a_grid_is_every_combination_and_runs_add_more():
    sweep = parse_sweep(SMALL + '\n[[runs]]\nsource = "tiny"\nsae = "jumprelu"\nwidth = [24, 48]\ncoefficient = 0.5\n')
    assert len(sweep.runs) == 2 * 2 * 2 + 2
    topk = [r for r in sweep.runs if r.columns["sae"] == "topk"]
    assert sorted((r.columns["k"], r.columns["seed"]) for r in topk) == [(2, 0), (2, 1), (4, 0), (4, 1)]
    standard = next(r for r in sweep.runs if r.columns["sae"] == "standard")
    assert standard.sae.config.target_l0 in (2.0, 4.0) and standard.columns["k"] is None
    jump = [r for r in sweep.runs if r.columns["sae"] == "jumprelu"]
    assert {r.sae.config.d_sae for r in jump} == {24, 48}
    assert all(r.sae.config.sparsity_coefficient == 0.5 and r.sae.config.target_l0 is None for r in jump)


def test_a_run_named_twice_trains_once_and_ids_hash_the_config():
    doubled = parse_sweep(SMALL + '\n[[runs]]\nsource = "tiny"\nsae = "topk"\nwidth = 24\ntarget_l0 = 2\nseed = 0\n')
    assert len(doubled.runs) == 8
    ids = [r.id for r in doubled.runs]
    assert len(set(ids)) == len(ids)
    again = parse_sweep(SMALL)
    assert [r.id for r in again.runs] == ids  # the same file, the same ids
    assert all(r.id == run_id(r.config) for r in again.runs)
    longer = parse_sweep(SMALL.replace("steps = 30", "steps = 31"))
    assert not set(ids) & {r.id for r in longer.runs}  # training length is part of a run's identity


def test_named_saes_and_matryoshka_inner_widths():
    sweep = parse_sweep(
        sweep_text(
            'source = "tiny"\nsae = ["bricken", "mat"]\nwidth = [24, 48]\n',
            extra='[saes.bricken]\narchitecture = "standard"\ndecoder_norm = "unit"\n'
            '[saes.mat]\narchitecture = "matryoshka_batchtopk"\nmatryoshka_prefixes = [4, 12]\nk = 3\n',
        )
    )
    mats = {r.sae.config.d_sae: r.sae.config.matryoshka_prefixes for r in sweep.runs if r.columns["sae"] == "mat"}
    assert mats == {24: (4, 12, 24), 48: (4, 12, 48)}
    assert {r.sae.config.decoder_norm for r in sweep.runs if r.columns["sae"] == "bricken"} == {"unit"}


BAD_FILES = {  # sweep text -> words the one error must contain (the field and the value)
    "unknown top field": (SMALL + "\nwidths = 3\n", ["widths", "3"]),
    "unknown grid field": (SMALL.replace("width = 24", "widht = 24"), ["grid.widht", "24"]),
    "unknown architecture": (SMALL.replace('"standard"', '"stnadard"'), ["stnadard"]),
    "unknown source": (SMALL.replace('source = "tiny"', 'source = "tinny"'), ["tinny"]),
    "negative width": (SMALL.replace("width = 24", "width = [24, -2]"), ["grid.width", "-2"]),
    "k on a penalty SAE": (SMALL.replace("target_l0 = [2, 4]", "k = 3"), ["k = 3", "standard"]),
    "fractional k": (SMALL.replace("target_l0 = [2, 4]", "target_l0 = 2.5"), ["target_l0 = 2.5", "topk"]),
    "k above width": (SMALL.replace("target_l0 = [2, 4]", "target_l0 = 30").replace('"standard"', ""), ["k=30"]),
    "two knobs": (SMALL.replace("seed = [0, 1]", "k = 2"), ["target_l0 and k"]),
    "no steps": (SMALL.replace("steps = 30\n", ""), ["train.steps"]),
    "bad lr": (SMALL.replace("steps = 30", "steps = 30\nlr = -1.0"), ["lr", "-1.0"]),
    "bad batch": (SMALL.replace("batch_size = 64", "batch_size = 0"), ["train.batch_size", "0"]),
    "unknown train field": (SMALL.replace("steps = 30", "steps = 30\nlearning_rate = 1"), ["train.learning_rate"]),
    "bad preset": (SMALL.replace('source = "tiny"', 'source = "synthsaebench-tiny"'), ["synthsaebench-tiny"]),
    "bad source field": (SMALL.replace("d = 16,", "dim = 16,"), ["sources.tiny", "dim"]),
    "bad factory": (
        SMALL.replace('"standard"', '"mine"') + '\n[saes.mine]\nfactory = "no_such_module:make"\n',
        ["saes.mine.factory", "no_such_module"],
    ),
    "factory without the field": (
        SMALL.replace('"standard"', '"mine"') + f'\n[saes.mine]\nfactory = "{__name__}:raising_factory"\nfoo = 1\n',
        ["saes.mine.foo", "foo"],
    ),
    "empty list": (SMALL.replace("seed = [0, 1]", "seed = []"), ["grid.seed", "empty"]),
    "not toml": ("[train\nsteps = 3", ["TOML"]),
    "no runs": ("[train]\nsteps = 3\n", ["no runs"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_one_error_naming_the_field_and_writes_nothing(case, tmp_path):
    text, words = BAD_FILES[case]
    with pytest.raises(SweepError) as raised:
        parse_sweep(text)
    for word in words:
        assert word in str(raised.value), (case, str(raised.value))
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["sweep", "run", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_sweeps_resolve(name):
    sweep = load_sweep(shipped_path(name))
    assert sweep.name == name and len(sweep.runs) >= 8
    assert len({r.id for r in sweep.runs}) == len(sweep.runs)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "benchmarks" / "sweeps").glob("*.toml")))
def test_benchmark_sweeps_resolve(path, tmp_path, monkeypatch):
    """A file reading a hook of a shipped model names the folder its comment installs it to, ``NAME-run``."""
    from analysis.experiments.pretrained import install_pretrained

    monkeypatch.chdir(tmp_path)
    for table in tomllib.loads(path.read_text()).get("sources", {}).values():
        if "run" in table:
            install_pretrained(table["run"].removesuffix("-run"), table["run"])
    assert load_sweep(path).runs


@given(
    widths=st.lists(st.integers(8, 64), min_size=1, max_size=3, unique=True),
    l0s=st.lists(st.integers(1, 8), min_size=1, max_size=3, unique=True),
    seeds=st.lists(st.integers(0, 2**31), min_size=1, max_size=3, unique=True),
    saes=st.lists(st.sampled_from(["topk", "standard", "gated", "batchtopk"]), min_size=1, max_size=3, unique=True),
    order=st.randoms(use_true_random=False),
)
@settings(max_examples=25, deadline=None)
def test_a_grid_expands_to_its_product_whatever_the_order_of_its_lists(widths, l0s, seeds, saes, order):
    def grid(w, l, s, a):
        return sweep_text(f'source = "tiny"\nsae = {json.dumps(a)}\nwidth = {w}\ntarget_l0 = {l}\nseed = {s}\n')

    sweep = parse_sweep(grid(widths, l0s, seeds, saes))
    assert len(sweep.runs) == len(widths) * len(l0s) * len(seeds) * len(saes)
    assert len({r.id for r in sweep.runs}) == len(sweep.runs)
    shuffled = [order.sample(values, len(values)) for values in (widths, l0s, seeds, saes)]
    assert {r.id for r in parse_sweep(grid(*shuffled)).runs} == {r.id for r in sweep.runs}
    for run in sweep.runs:
        assert run.sae.config.d_sae == run.columns["width"] and run.sae.config.seed == run.columns["seed"]


def test_the_synthsaebench_small_protocol_covers_every_builtin_at_two_l0s_and_three_seeds():
    from toymodels.sae import architectures

    sweep = load_sweep(shipped_path("synthsaebench-small"))
    assert {r.columns["architecture"] for r in sweep.runs} == set(architectures())
    assert {r.columns["target_l0"] for r in sweep.runs} == {12.0, 20.0}
    assert {r.columns["seed"] for r in sweep.runs} == {0, 1, 2}


# ------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------


def metrics(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())["metrics"] for p in sorted(out.glob("runs/*/run.json"))}


def weights(out: Path, rid: str) -> dict[str, torch.Tensor]:
    return load_file(out / "runs" / rid / "sae" / "sae_weights.safetensors")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """SMALL run one SAE at a time in this process: the results every other way of running must equal."""
    out = tmp_path_factory.mktemp("reference")
    report = run_sweep(parse_sweep(SMALL), out, workers=1, group_size=1, progress=False)
    assert report.count("finished") == 8 and not report.failed
    return out


def test_a_finished_run_folder_holds_config_metrics_sae_timings_and_versions(reference):
    sweep = parse_sweep(SMALL)
    for run in sweep.runs:
        record = json.loads((reference / "runs" / run.id / "run.json").read_text())
        assert record["id"] == run.id and record["config"] == json.loads(json.dumps(run.config))
        assert record["columns"] == json.loads(json.dumps(dict(run.columns)))
        for key in ("l0", "fve", "mcc", "f1", "dead", "absorption", "final_coefficient"):
            assert key in record["metrics"]
        assert record["timings"]["train_seconds"] > 0 and record["versions"]["torch"] == torch.__version__
        assert saved_config(reference / "runs" / run.id / "sae") == run.sae.config
        assert load_sae(reference / "runs" / run.id / "sae").cfg.d_sae == run.columns["width"]
    assert not list(reference.glob("work/*")) and not (reference / "failed").exists()


def test_the_l0_of_a_k_sae_is_its_target(reference):
    for run in parse_sweep(SMALL).runs:
        if run.columns["sae"] == "topk":
            assert metrics(reference)[run.id]["l0"] == pytest.approx(run.columns["target_l0"], abs=1e-6)


@given(group_size=st.integers(2, 4))
@settings(max_examples=2, deadline=None)
def test_grouping_runs_on_shared_streams_changes_no_result(reference, group_size, tmp_path_factory):
    out = tmp_path_factory.mktemp("grouped")
    run_sweep(parse_sweep(SMALL), out, workers=1, group_size=group_size, progress=False)
    assert metrics(out) == metrics(reference)
    for rid in metrics(reference):
        for name, tensor in weights(reference, rid).items():
            assert torch.equal(weights(out, rid)[name], tensor)


# Large enough that torch splits its reductions over threads, so a thread count that leaked into the
# scores would change their last bits (it did, before scoring ran on one thread).
MEDIUM = """
[train]
steps = 15
batch_size = 512
n_eval = 8192

[sources.medium]
sparse = { d = 64, n_features = 512, target_l0 = 6.0, seed = 3 }

[grid]
source = "medium"
sae = ["topk", "standard"]
width = 128
target_l0 = 6
seed = [0, 1]
"""


def test_worker_processes_and_their_threads_change_no_result(tmp_path):
    with torch_threads(2):  # the tests run on one thread; a sweep shares out what its process has
        one = run_sweep(parse_sweep(MEDIUM), tmp_path / "one", workers=1, progress=False)  # 2 threads
        two = run_sweep(parse_sweep(MEDIUM), tmp_path / "two", workers=2, progress=False)  # 1 thread each
    assert one.count("finished") == two.count("finished") == 4
    assert metrics(tmp_path / "two") == metrics(tmp_path / "one")
    for rid in metrics(tmp_path / "one"):
        for name, tensor in weights(tmp_path / "one", rid).items():
            assert torch.equal(weights(tmp_path / "two", rid)[name], tensor)


def test_tasks_share_streams_and_split_to_feed_the_workers(tmp_path):
    sweep = parse_sweep(SMALL)
    tasks = plan_tasks(sweep, tmp_path, workers=1, group_size=4, device="cpu")
    assert sorted(len(t.runs) for t in tasks) == [4, 4]  # one task per seed
    assert all(len({r.stream_key for r in t.runs}) == 1 for t in tasks)
    assert len(plan_tasks(sweep, tmp_path, workers=8, group_size=4, device="cpu")) == 8
    assert sorted(len(t.runs) for t in plan_tasks(sweep, tmp_path, workers=3, group_size=4, device="cpu")) == [2] * 4


class Killed(BaseException):
    """Stands in for the process being killed mid-training."""


def test_a_killed_sweep_resumes_skipping_finished_runs_and_continuing_the_interrupted_one(
    reference, tmp_path, monkeypatch
):
    sweep = parse_sweep(SMALL.replace("batch_size = 64", "batch_size = 64\ncheckpoint_every = 5"))
    assert [r.id for r in sweep.runs] == [r.id for r in parse_sweep(SMALL).runs]  # checkpointing is no identity
    original = Trainer.step
    calls = {"n": 0}

    def dies_later(self, x, step):
        calls["n"] += 1
        if calls["n"] == 30 * 4 + 4 * 7 + 2:  # the second group of four, its eighth step (checkpoint at 5)
            raise Killed()
        return original(self, x, step)

    monkeypatch.setattr(Trainer, "step", dies_later)
    with pytest.raises(Killed):
        run_sweep(sweep, tmp_path, workers=1, group_size=4, progress=False)
    finished = {p.parent.name for p in tmp_path.glob("runs/*/run.json")}
    assert len(finished) == 4  # the first group
    assert {p.name for p in (tmp_path / "runs").iterdir()} == finished  # no folder that looks finished
    interrupted = [p for p in (tmp_path / "work").iterdir()]
    assert interrupted and all((p / "latest" / "trainer.json").exists() for p in interrupted)
    monkeypatch.setattr(Trainer, "step", original)
    resumed_from = {}
    real_open = sweep_run.train_saes

    def spy(saes, batches, train, **kw):
        resumed_from.update({str(d): json.loads((Path(d) / "latest" / "trainer.json").read_text())["step"]
                             for d in kw["checkpoint_dirs"] if (Path(d) / "latest").exists()})  # fmt: skip
        return real_open(saes, batches, train, **kw)

    monkeypatch.setattr(sweep_run, "train_saes", spy)
    report = run_sweep(sweep, tmp_path, workers=1, group_size=4, progress=False)
    assert report.count("finished") == 4 and report.total == 8
    assert set(resumed_from.values()) == {5}  # from the checkpoint, not from scratch
    assert metrics(tmp_path) == metrics(reference)  # and to the same results
    assert not list((tmp_path / "work").iterdir())
    shared = {json.loads(p.read_text())["timings"]["saes_sharing_stream"] for p in tmp_path.glob("runs/*/run.json")}
    assert shared == {4}


def raising_factory(d_in: int, d_sae: int, *, seed: int = 0, k: int = 2):
    """A user's factory that cannot build wide SAEs."""
    if d_sae > 24:
        raise RuntimeError(f"no SAE wider than 24 (asked for {d_sae})")
    from toymodels.sae import make_sae

    return make_sae(SAEConfig("topk", d_in, d_sae, k=k, seed=seed))


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path, capsys):
    text = sweep_text(
        'source = "tiny"\nsae = ["mine", "topk"]\nwidth = [24, 48]\nk = 2\n',
        extra=f'[saes.mine]\nfactory = "{__name__}:raising_factory"\n',
    )
    path = tmp_path / "mine.toml"
    path.write_text(text)
    assert main(["sweep", "run", str(path), "--out", str(tmp_path / "out"), "--workers", "1", "--no-progress"]) == 1
    shown = capsys.readouterr().out
    assert "3 finished" in shown and "1 failed" in shown and "no SAE wider than 24" in shown
    (failure,) = (tmp_path / "out" / "failed").iterdir()
    record = json.loads(failure.read_text())
    assert record["columns"]["width"] == 48 and "RuntimeError: no SAE wider than 24" in record["error"]
    assert len(list((tmp_path / "out").glob("runs/*/run.json"))) == 3


def test_results_and_plot_commands_read_the_saved_runs(reference, tmp_path, capsys):
    assert main(["sweep", "results", str(reference)]) == 0
    shown = capsys.readouterr().out
    assert "topk" in shown and "standard" in shown and str(reference / "results.csv") in shown
    assert main(["sweep", "plot", str(reference)]) == 0
    assert (reference / "figures" / "metrics_vs_l0.png").exists()
    assert (reference / "figures" / "bars_by_target_l0.pdf").exists()
    assert main(["sweep", "results", str(tmp_path)]) == 2  # not a sweep folder: one line, no traceback
    assert str(tmp_path) in capsys.readouterr().err


def readme_toml_blocks() -> list[str]:
    import re

    return re.findall(r"```toml\n(.*?)```", (Path(__file__).parents[2] / "README.md").read_text(), re.S)


def test_the_readme_sweep_file_resolves_and_is_short():
    block = readme_toml_blocks()[0]
    assert len(block.strip().splitlines()) <= 20
    sweep = parse_sweep(block)
    assert len(sweep.runs) == 3 * 2 * 2


def test_the_readme_end_to_end_sweep_resolves_on_the_shipped_mess3_model(tmp_path, monkeypatch):
    from analysis.experiments.pretrained import install_pretrained

    blocks = readme_toml_blocks()
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    install_pretrained("mess3", "groundtruth-beliefs/mess3-paper")
    sweep = parse_sweep(blocks[1])
    assert sorted((run.columns["objective"], run.columns["target_l0"]) for run in sweep.runs) == [
        ("e2e", 3.0),
        ("e2e", 6.0),
        ("local", 3.0),
        ("local", 6.0),
    ]


def test_batches_generated_in_worker_processes_train_the_same_saes(reference, tmp_path):
    """The data path a GPU gets (generation in worker processes) feeds the same bytes as the serial stream."""
    from dataclasses import replace

    sweep = parse_sweep(SMALL)  # on the reference's device (a GPU where there is one), compared bit for bit
    tasks = plan_tasks(sweep, tmp_path, workers=1, group_size=4, device=sweep.device)
    for task in tasks:
        assert all(o.status == "finished" for o in sweep_run.run_task(replace(task, data_workers=2)))
    assert metrics(tmp_path) == metrics(reference)
