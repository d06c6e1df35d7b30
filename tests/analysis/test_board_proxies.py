"""Tests of SAEBench's proxies on the board of a games model (analysis.experiments.proxies.board_proxy_task and
score_sweep on a games hook source): the task's rows and labels against a plain loop over the held-out games,
its choice of labels against brute force, the sweep table against direct calls, and the summary and figure of a
games table by hand."""

import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from analysis.cli import main
from analysis.experiments.activations import activations
from analysis.experiments.games import EvalGames, GameConfig, open_model_run
from analysis.experiments.proxies import (
    _labelled_task,
    board_proxy_task,
    ground_truth_columns,
    proxy_scores,
    proxy_summary,
    score_sweep,
)
from analysis.experiments.sweep import load_results, parse_sweep, run_sweep
from analysis.experiments.sweep.hooks import model_hook
from analysis.figures.proxies import proxies_vs_ground_truth
from games import PAD
from groundtruth.threads import torch_threads
from toymodels.sae import load_sae
from toymodels.transformer import load_transformer

GAMES = GameConfig(game="othello6", model="tiny", steps=5, batch_size=16)
HOOK = "blocks.1.hook_resid_post"
SIZES = {"n_train_games": 60, "n_test_games": 40, "n_probing": 6, "n_pairs": 2, "n_classes": 3}
FAST = settings(max_examples=10, deadline=None)


@pytest.fixture(scope="module")
def games_run(tmp_path_factory) -> Path:
    return open_model_run(GAMES, tmp_path_factory.mktemp("games") / "othello6-run", progress=False)[0]


@pytest.fixture(scope="module")
def spec(games_run):
    return model_hook({"run": str(games_run), "hook": HOOK})


@pytest.fixture(scope="module")
def task(spec):
    with torch_threads(1):  # as score_sweep builds it, for the same bits
        return board_proxy_task(spec, **SIZES)


def _reference_rows(spec, n_games: int, purpose: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The rows a task should hold, in game order, by a loop over the games and their positions."""
    games = EvalGames.draw(GAMES, n_games, spec.seed(purpose))
    model = load_transformer(Path(spec.folder) / "model")
    x = activations(model, games.inputs, [HOOK])[1][HOOK]
    columns = [i for i, name in enumerate(games.names) if name.split("@")[0] in ("mine", "theirs")]
    rows, labels = [], []
    for g in range(n_games):
        for i in range(games.inputs.shape[1]):
            if int(games.inputs[g, i]) != PAD:
                rows.append(x[g, i].numpy())
                labels.append([bool(games.labels[g, i, c]) for c in columns])
    return np.array(rows), np.array(labels), [games.names[c] for c in columns]


def _sorted_rows(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    both = np.concatenate([x, labels.astype(x.dtype)], 1)
    return both[np.lexsort(both.T[::-1])]


@pytest.mark.parametrize(("split", "n_games"), [("train", 60), ("test", 40)])
def test_board_task_holds_every_real_position_with_its_pieces(spec, task, split, n_games):
    """The task's rows are the real positions of its held-out games (padding left out), in some order, each
    with the pieces' labels of that position, named as the games name them."""
    x, labels, names = _reference_rows(spec, n_games, f"proxies {split}")
    task_x = {"train": task.train_x, "test": task.test_x}[split].numpy()
    task_labels = task.labels(split, task.features).numpy()
    columns = [names.index(name) for name in task.names]
    assert len(task_x) == len(x) and not (task_x == x).all()  # shuffled
    np.testing.assert_array_equal(_sorted_rows(task_x, task_labels), _sorted_rows(x, labels[:, columns]))
    assert [names[f] for f in task.features] == list(task.names)


def test_board_task_pairs_and_classes_lie_on_distinct_squares(task):
    square = {f: task.names[task.features.index(f)].split("@")[1] for f in task.features}
    assert len({square[f] for pair in task.scr_pairs for f in pair}) == 2 * SIZES["n_pairs"]
    assert len({square[f] for f in task.tpp_classes}) == SIZES["n_classes"]
    assert len(set(task.probing)) == SIZES["n_probing"]
    assert all(name.split("@")[0] in ("mine", "theirs") for name in task.names)


def test_board_task_games_are_apart_from_the_sweeps(spec):
    seeds = {spec.seed(p) for p in ("train", "eval", "proxies train", "proxies test")}
    assert len(seeds) == 4


def test_board_task_refuses_bad_sizes_by_name(spec):
    with pytest.raises(ValueError, match="n_train_games"):
        board_proxy_task(spec, n_train_games=0)
    with pytest.raises(ValueError, match="n_probing=500 but only"):
        board_proxy_task(spec, **{**SIZES, "n_probing": 500})


@FAST
@given(seed=st.integers(0, 2**31 - 1), n_labels=st.integers(6, 12), n_groups=st.integers(4, 6))
def test_label_choice_matches_brute_force(seed, n_labels, n_groups):
    """Independent labels of random rates, in random groups: probing takes distinct labels with both classes in
    at least min_fraction of the rows; SCR pairs and TPP classes are the best balanced label of each of the best
    balanced groups (ties to the lower index), found here by brute force over the groups."""
    g = torch.Generator().manual_seed(seed)
    n, min_fraction = 2000, 0.1
    rates = torch.rand(n_labels, generator=g) * 0.96 + 0.02
    labels = torch.rand(n, n_labels, generator=g) < rates
    group = torch.randint(0, n_groups, (n_labels,), generator=g)
    x = torch.randn(n, 3, generator=g)
    balance = [min(int(labels[:, i].sum()), n - int(labels[:, i].sum())) for i in range(n_labels)]  # rarer class
    best = {}
    for i in range(n_labels):
        if balance[i] >= min_fraction * n and (int(group[i]) not in best or balance[i] > balance[best[int(group[i])]]):
            best[int(group[i])] = i
    ranked = sorted(best.values(), key=lambda i: (-balance[i], i))
    eligible = [i for i in range(n_labels) if balance[i] >= min_fraction * n]
    sizes = {"n_probing": min(3, len(eligible)), "n_pairs": 1, "n_classes": 2, "min_fraction": min_fraction}
    if len(ranked) < 2 or not eligible:
        with pytest.raises(ValueError, match="n_probing|n_pairs"):
            _labelled_task(x, x, labels, labels, group, kind="features", **sizes)
        return
    task = _labelled_task(x, x, labels, labels, group, kind="features", **sizes)
    assert task.scr_pairs == ((ranked[0], ranked[1]),) and task.tpp_classes == (ranked[0], ranked[1])
    assert len(set(task.probing)) == sizes["n_probing"] and set(task.probing) <= set(eligible)
    assert (
        max(task.probing, key=lambda i: (balance[i], -i))
        == task.probing[0]
        == max(eligible, key=lambda i: (balance[i], -i))
    )
    torch.testing.assert_close(task.labels("test", task.tpp_classes), labels[:, list(task.tpp_classes)])


SWEEP = """[train]
steps = 20
batch_size = 64
n_eval = 300

[sources.m]
run = "othello6-run"
hook = "blocks.1.hook_resid_post"
sequences = 64

[grid]
source = "m"
sae = "topk"
width = 32  # over 20 latents: the summary shows SCR and TPP at 20 ablated
k = [2, 4]
"""


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory, games_run) -> Path:
    """A folder holding the games run (as ``othello6-run``) and ``out/``, a tiny sweep of two TopK SAEs on its
    hook run from there, the run folder named relative to it as sweep files name them."""
    root = tmp_path_factory.mktemp("sweep")
    (root / "othello6-run").symlink_to(games_run)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        report = run_sweep(parse_sweep(SWEEP), root / "out", workers=1, progress=False, device="cpu")
    assert report.count("finished") == 2
    return root


def test_score_sweep_on_a_games_sweep_matches_direct_calls(tmp_path, monkeypatch, sweep_root, task):
    """The proxies of each saved SAE as proxy_scores gives them on the task built directly, beside the sweep's
    own board F1 and coverage; the CLI writes the summary against those; from another folder the saved sweep
    file's relative run folder is not found, and the error says so."""
    out = shutil.copytree(sweep_root / "out", tmp_path / "out")
    monkeypatch.chdir(sweep_root)
    table = score_sweep(out, **SIZES)
    runs = load_results(out).set_index("id")
    assert sorted(table["id"]) == sorted(runs.index) and len(table) == 2
    for _, row in table.iterrows():
        with torch_threads(1):
            direct = proxy_scores(load_sae(out / "runs" / row["id"] / "sae"), task)
        for name, value in direct.items():
            assert row[name] == pytest.approx(value, abs=1e-6), name
        assert (row["board_f1"], row["coverage"]) == (runs.loc[row["id"], "board_f1"], runs.loc[row["id"], "coverage"])
    written = ["id", "board_f1", "coverage", *direct]
    pd.testing.assert_frame_equal(pd.read_csv(out / "proxies.csv")[written], table[written], check_dtype=False)
    assert main(["sweep", "proxies", str(out)]) == 0
    summary = pd.read_csv(out / "proxies_summary.csv")
    assert list(summary.columns[:3]) == ["metric", "spearman_board_f1", "spearman_coverage"]
    assert (out / "figures" / "proxies.png").stat().st_size
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="'othello6-run': no such folder"):
        score_sweep(out, **SIZES)


def _edited_run(sweep_root: Path, tmp_path: Path, edit) -> Path:
    """A copy of the sweep's output with ``edit`` applied to the source of its first run (in run id order)."""
    out = shutil.copytree(sweep_root / "out", tmp_path / "out")
    path = sorted((out / "runs").glob("*/run.json"))[0]
    record = json.loads(path.read_text())
    edit(record["config"]["source"])
    path.write_text(json.dumps(record))
    return out


def test_score_sweep_refuses_a_beliefs_source_by_name(tmp_path, monkeypatch, sweep_root):
    monkeypatch.chdir(sweep_root)
    out = _edited_run(sweep_root, tmp_path, lambda source: source["model_hook"].update(run={"process": "mess3"}))
    with pytest.raises(ValueError, match="has a hook of a beliefs model \\('mess3'\\).*no binary properties"):
        score_sweep(out, **SIZES)
    shutil.rmtree(out)
    out = _edited_run(sweep_root, tmp_path, lambda source: source.update(toy_model=source.pop("model_hook")))
    with pytest.raises(ValueError, match="has source \\['toy_model'\\]; proxies need"):
        score_sweep(out, **SIZES)


def test_score_sweep_refuses_a_folder_holding_another_model(tmp_path, monkeypatch, sweep_root):
    monkeypatch.chdir(sweep_root)
    out = _edited_run(sweep_root, tmp_path, lambda source: source["model_hook"].update(weights_sha256="0" * 64))
    with pytest.raises(ValueError, match="reads blocks.1.hook_resid_post of a games model .* no run folder"):
        score_sweep(out, **SIZES)


def _games_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sae": ["a", "a", "b", "b"],
            "k": [8, 8, 16, 16],
            "seed": [0, 1, 0, 1],
            "board_f1": [0.1, 0.2, 0.5, 0.6],
            "coverage": [0.6, 0.5, 0.2, 0.1],
            "sparse_probing_top_1": [1.0, 2.0, 3.0, 4.0],
            "scr_top_20": [4.0, 3.0, 1.0, 2.0],
            "tpp_top_20": [1.0, 1.0, 2.0, 2.0],
        }
    )


def test_proxy_summary_of_a_games_table_by_hand():
    summary = proxy_summary(_games_table(), ["sparse_probing_top_1", "scr_top_20"]).set_index("metric")
    assert list(summary.columns[:2]) == ["spearman_board_f1", "spearman_coverage"]
    assert summary.loc["sparse_probing_top_1", "spearman_board_f1"] == pytest.approx(1.0)
    assert summary.loc["sparse_probing_top_1", "spearman_coverage"] == pytest.approx(-1.0)
    assert summary.loc["scr_top_20", "spearman_board_f1"] == pytest.approx(-0.8)  # ranks 4 3 1 2 against 1 2 3 4
    half = np.sqrt(0.5)
    assert summary.loc["sparse_probing_top_1", "cv_over_seeds"] == pytest.approx((half / 1.5 + half / 3.5) / 2)
    assert list(summary.index) == ["sparse_probing_top_1", "scr_top_20", "board_f1", "coverage"]


def test_ground_truth_columns_are_the_tables():
    assert ground_truth_columns(_games_table()) == ("board_f1", "coverage")
    assert ground_truth_columns(pd.DataFrame(columns=["f1", "mcc", "coverage"])) == ("f1", "mcc")
    with pytest.raises(ValueError, match="none of the ground-truth column sets"):
        ground_truth_columns(pd.DataFrame(columns=["board_f1", "p"]))


def test_figure_of_a_games_table_has_board_axes():
    table = _games_table()
    fig = proxies_vs_ground_truth(table)
    axes = np.array(fig.axes).reshape(2, 3)
    assert axes[0, 0].get_xlabel() == "ground-truth board reconstruction F1"
    assert axes[1, 2].get_xlabel() == "ground-truth coverage"
    rho = spearmanr(table["coverage"], table["tpp_top_20"]).statistic
    assert axes[1, 2].get_title() == f"Spearman ρ = {rho:.2f}"
    plt.close(fig)
