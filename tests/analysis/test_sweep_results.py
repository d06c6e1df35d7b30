"""The sweep's results table and figures, read from run folders written here by hand in the sweep folder format
(DIR/runs/<id>/run.json, DIR/failed/<id>.json), checked against sums done in plain Python and numpy."""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.experiments.sweep.results import load_failures, load_results, summarise, write_results
from analysis.figures.sweep import plot_sweep, sweep_figures

METRICS = ("l0", "fve", "mcc", "f1", "dead", "absorption", "final_coefficient")


def columns(**changes) -> dict:
    """A run's "columns" as the runner writes them (a TopK SAE at target L0 4 unless changed)."""
    base = {
        "source": "toy",
        "sae": "topk",
        "architecture": "topk",
        "width": 64,
        "target_l0": 4.0,
        "k": 4,
        "coefficient": None,
        "objective": None,  # a key the sweep never sets: null for every run
        "steps": 10,
        "lr": 0.001,
        "seed": 0,
    }
    return base | changes


def run_id(cols: dict) -> str:
    return hashlib.sha256(json.dumps(cols, sort_keys=True).encode()).hexdigest()[:16]


def write_run(out: Path, cols: dict, metrics: dict, train_seconds: float = 1.0) -> str:
    """A finished run's folder, DIR/runs/<id>/run.json."""
    rid = run_id(cols)
    folder = out / "runs" / rid
    folder.mkdir(parents=True)
    record = {
        "id": rid,
        "columns": cols,
        "config": {"columns": cols},
        "metrics": metrics,
        "timings": {"train_seconds": train_seconds, "score_seconds": 0.5, "samples_per_second": 1e4},
        "versions": {"groundtruth": "0.1.0", "git_commit": None, "torch": "2.13.0", "python": "3.11.7"},
        "device": "cpu",
    }
    (folder / "run.json").write_text(json.dumps(record, indent=1))
    return rid


def write_failure(out: Path, cols: dict, error: str) -> str:
    rid = run_id(cols)
    (out / "failed").mkdir(parents=True, exist_ok=True)
    record = {"id": rid, "columns": cols, "config": {}, "error": error, "traceback": "Traceback ..."}
    (out / "failed" / f"{rid}.json").write_text(json.dumps(record))
    return rid


def random_metrics(rng: np.random.Generator, sae: str, target: float | None) -> dict:
    l0 = (target or 6.0) * (1 + rng.normal(0, 0.05))
    return {
        "l0": l0,
        "fve": float(rng.uniform(0.6, 0.9)),
        "mcc": float(rng.uniform(0.5, 0.8)),
        "f1": float(rng.uniform(0.4, 0.9)),
        "dead": float(rng.integers(0, 5)),
        "absorption": None if sae == "standard" else float(rng.uniform(0, 0.2)),
        "final_coefficient": 0.1 if sae == "standard" else None,
    }


def make_sweep(out: Path, widths=(64, 128), targets=(4.0, 8.0), seeds=(0, 1, 2)) -> list[dict]:
    """TopK and standard SAEs at each width and target L0 over the seeds, plus one TopK run that sets
    k = 6 directly (target_l0 null, one seed); returns the run.json records written."""
    rng = np.random.default_rng(0)
    written = []
    for sae in ("topk", "standard"):
        for width in widths:
            for target in targets:
                for seed in seeds:
                    knob = {"k": int(target), "coefficient": None} if sae == "topk" else {"k": None, "coefficient": 0.1}
                    cols = columns(sae=sae, architecture=sae, width=width, target_l0=target, seed=seed, **knob)
                    metrics = random_metrics(rng, sae, target)
                    write_run(out, cols, metrics)
                    written.append({"columns": cols, "metrics": metrics})
    cols = columns(target_l0=None, k=6, seed=0)
    metrics = random_metrics(rng, "topk", None)
    del metrics["final_coefficient"]  # a run that lacks a metric key altogether
    write_run(out, cols, metrics)
    written.append({"columns": cols, "metrics": metrics})
    return written


def null_last(value):
    return (value is None, value)


def config_of(cols: dict) -> tuple:
    """The configuration a run belongs to: its columns without seed (and without the all-null objective)."""
    return tuple(v for k, v in cols.items() if k not in ("seed", "objective"))


def test_load_results_has_one_sorted_row_per_run_with_every_column_metric_and_timing(tmp_path):
    written = make_sweep(tmp_path)
    df = load_results(tmp_path)
    assert list(df.columns) == [
        "id",
        *columns(),
        *METRICS,
        "train_seconds",
        "score_seconds",
        "samples_per_second",
        "device",
    ]
    # sorted by the columns in order (null last), then seed
    order = sorted(
        written, key=lambda r: [null_last(v) for k, v in r["columns"].items() if k != "seed"] + [r["columns"]["seed"]]
    )
    assert list(df["id"]) == [run_id(r["columns"]) for r in order]
    for r, (_, row) in zip(order, df.iterrows(), strict=True):
        for key, value in r["columns"].items():
            assert (pd.isna(row[key]) and value is None) or row[key] == value
        for key in METRICS:
            value = r["metrics"].get(key)
            assert (math.isnan(row[key]) and value is None) or row[key] == value
    assert (df["train_seconds"] == 1.0).all() and (df["device"] == "cpu").all()
    assert str(df["k"].dtype) == "Int64"  # an integer column with nulls stays integer


def test_summarise_matches_numpy_per_configuration(tmp_path):
    written = make_sweep(tmp_path)
    summary = summarise(load_results(tmp_path))
    assert "objective" not in summary and "seed" not in summary  # null for every run; averaged over
    groups: dict[tuple, list[dict]] = {}
    for r in written:
        groups.setdefault(config_of(r["columns"]), []).append(r["metrics"])
    assert len(summary) == len(groups) == 9
    keys = [k for k in columns() if k not in ("seed", "objective")]
    for _, row in summary.iterrows():
        config = tuple(None if pd.isna(row[k]) else row[k] for k in keys)
        runs = groups[config]
        assert row["n_seeds"] == len(runs)
        for m in METRICS:
            values = np.array([r.get(m) for r in runs if r.get(m) is not None], dtype=float)
            if len(values) == 0:
                assert math.isnan(row[f"{m}_mean"]) and math.isnan(row[f"{m}_std"])
                continue
            assert row[f"{m}_mean"] == pytest.approx(np.mean(values), rel=1e-12)
            if len(values) == 1:
                assert math.isnan(row[f"{m}_std"])
            else:
                assert row[f"{m}_std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    direct = summary[summary["target_l0"].isna()]  # the null group key is kept, as its own configuration
    assert len(direct) == 1 and direct["k"].iloc[0] == 6 and direct["n_seeds"].iloc[0] == 1
    assert direct["f1_std"].isna().all()


def test_write_results_csv_round_trips_and_table_shows_varying_columns_and_failures(tmp_path):
    written = make_sweep(tmp_path, widths=(64,))
    write_failure(tmp_path, columns(sae="gated", architecture="gated", seed=3), "RuntimeError: boom")
    text, path = write_results(tmp_path)
    assert path == tmp_path / "results.csv"
    summary = summarise(load_results(tmp_path))
    pd.testing.assert_frame_equal(pd.read_csv(path), summary, check_dtype=False)
    assert {p.name for p in tmp_path.iterdir()} == {"failed", "results.csv", "runs"}  # no temporary file left
    lines = text.splitlines()
    # settings line, header, one line per configuration (2 SAEs x 2 targets + the direct-k run), failures line
    assert len(lines) == 1 + 1 + 5 + 1
    assert lines[0] == "all runs: source=toy, width=64, steps=10, lr=0.001"
    assert lines[1].split() == [
        "sae",
        "target_l0",
        "k",
        "coefficient",
        "L0",
        "FVE",
        "MCC",
        "F1",
        "absorption",
        "dead",
        "seeds",
    ]
    f1 = [r["metrics"]["f1"] for r in written if r["columns"]["sae"] == "standard" and r["columns"]["target_l0"] == 8.0]
    expected = f"{np.mean(f1):.3f} ± {np.std(f1, ddof=1):.3f}"
    (standard_8,) = [line for line in lines if line.split()[:2] == ["standard", "8.0"]]
    assert expected in standard_8 and standard_8.split()[-1] == "3"
    assert "n/a" in standard_8  # standard SAEs have no absorption here
    (direct,) = [line for line in lines if line.split()[:4] == ["topk", "-", "6", "-"]]  # target_l0 null, k set
    assert direct.split()[-1] == "1" and "±" not in direct  # one seed: means alone
    assert lines[-1] == f"1 run(s) failed: their errors are in {tmp_path / 'failed'}/<id>.json"


def test_table_shows_a_hook_sources_own_metrics(tmp_path):
    for seed, ce in enumerate((0.25, 0.35)):
        write_run(
            tmp_path,
            columns(source="tiny-lm:blocks.0.hook_resid_post", seed=seed),
            {"l0": 4.0, "fve": 0.9, "ce_loss_delta": ce},
        )
    text, _ = write_results(tmp_path)
    header = text.splitlines()[1].split()
    assert header == ["L0", "FVE", "ce_loss_delta", "seeds"]
    assert text.splitlines()[2].split() == ["4.0", "±", "0.0", "0.900", "±", "0.000", "0.300", "±", "0.071", "2"]


def test_table_shows_the_splice_scores_and_keeps_their_parts_and_per_hook_metrics_in_the_csv(tmp_path):
    splice = {"ce_loss_with_sae": 1.2, "ce_loss_score": 0.8, "kl_div_score": 0.7, "n_positions": 100.0}
    metrics = {"l0": 4.0, **splice, "belief_r2_spliced@blocks.1.hook_resid_post": 0.5}
    write_run(tmp_path, columns(source="mess3:blocks.0.hook_resid_post"), metrics)
    text, path = write_results(tmp_path)
    assert text.splitlines()[1].split() == ["L0", "ce_loss_score", "kl_div_score", "seeds"]
    assert {f"{m}_mean" for m in metrics} <= set(pd.read_csv(path).columns)


def test_load_failures_lists_each_failed_run(tmp_path):
    a = write_failure(tmp_path, columns(sae="gated", architecture="gated"), "RuntimeError: boom")
    b = write_failure(tmp_path, columns(width=8), "ValueError: width")
    failures = load_failures(tmp_path)
    assert list(failures["id"]) == [a, b]  # sorted by columns: gated before topk
    assert list(failures["error"]) == ["RuntimeError: boom", "ValueError: width"]
    assert list(failures["sae"]) == ["gated", "topk"] and list(failures["width"]) == [64, 8]
    assert len(load_results(tmp_path)) == 0  # no finished runs is an empty table, not an error
    text, path = write_results(tmp_path)
    assert text.startswith("no finished runs") and "2 run(s) failed" in text


def test_a_folder_that_is_not_a_sweep_output_is_refused_by_name(tmp_path):
    folder = tmp_path / "not-a-sweep"
    folder.mkdir()
    for read in (load_results, load_failures, write_results, plot_sweep):
        with pytest.raises(ValueError, match="not-a-sweep"):
            read(folder)


def test_an_unreadable_run_is_skipped_with_a_warning(tmp_path, caplog):
    write_run(tmp_path, columns(), {"f1": 0.5})
    bad = tmp_path / "runs" / "0123456789abcdef"
    bad.mkdir()
    (bad / "run.json").write_text('{"id": "0123456789abcdef", "columns": {')
    missing = tmp_path / "runs" / "fedcba9876543210"
    missing.mkdir()
    (missing / "run.json").write_text('{"id": "fedcba9876543210", "columns": {}}')
    df = load_results(tmp_path)
    assert len(df) == 1 and df["f1"].iloc[0] == 0.5
    assert str(bad / "run.json") in caplog.text and "no 'metrics'" in caplog.text


def test_runs_the_columns_cannot_tell_apart_are_reported(tmp_path, caplog):
    cols = columns()
    write_run(tmp_path, cols, {"f1": 0.5})
    (tmp_path / "runs" / run_id(cols)).rename(tmp_path / "runs" / "other")
    write_run(tmp_path, cols, {"f1": 0.7})
    summary = summarise(load_results(tmp_path))
    assert summary["n_seeds"].iloc[0] == 2 and "same seed" in caplog.text


def errorbars(ax, label: str):
    """The (x, y, half-length of the vertical error bars) of the errorbar series labelled ``label`` on ``ax``."""
    (container,) = [c for c in ax.containers if c.get_label() == label]
    line, _, bar_lines = container.lines
    segments = [seg for bars in bar_lines for seg in bars.get_segments() if len(seg)]  # none for one seed
    half = [abs(seg[1][1] - seg[0][1]) / 2 for seg in segments if seg[0][0] == seg[1][0]]
    return list(line.get_xdata()), list(line.get_ydata()), half


def test_figures_plot_the_means_over_seeds_with_std_error_bars(tmp_path):
    make_sweep(tmp_path)
    df = load_results(tmp_path)
    summary = summarise(df)
    figures = sweep_figures(df)
    try:
        assert set(figures) == {"metrics_vs_l0", "metrics_vs_width", "bars_by_target_l0"}
        # metrics_vs_l0: rows F1, MCC, FVE, absorption; one line per SAE and width, along target L0
        axes = figures["metrics_vs_l0"].axes
        assert [ax.get_ylabel() for ax in axes[:4]] == ["F1", "MCC", "FVE", "absorption"]
        topk = summary[(summary["sae"] == "topk") & (summary["width"] == 64)].sort_values("l0_mean")
        assert len(topk) == 3  # targets 4 and 8 and the direct k = 6 run lie on one line
        x, y, yerr = errorbars(axes[0], "topk · width=64")
        assert x == pytest.approx(list(topk["l0_mean"])) and y == pytest.approx(list(topk["f1_mean"]))
        assert yerr == pytest.approx([s for s in topk["f1_std"] if not math.isnan(s)])
        # metrics_vs_width: one line per SAE and target L0, along width
        standard = summary[(summary["sae"] == "standard") & (summary["target_l0"] == 8.0)].sort_values("width")
        x, y, yerr = errorbars(figures["metrics_vs_width"].axes[1], "standard · target_l0=8")
        assert x == [64, 128] and y == pytest.approx(list(standard["mcc_mean"]))
        assert yerr == pytest.approx(list(standard["mcc_std"]))
        x, y, yerr = errorbars(figures["metrics_vs_width"].axes[1], "topk · k=6")  # no target L0: named by k
        assert x == [64] and y == pytest.approx(list(summary[summary["target_l0"].isna()]["mcc_mean"])) and yerr == []
        # bars: facet width 64 first, F1 panel first; one bar per target L0 for each SAE
        ax = figures["bars_by_target_l0"].axes[0]
        assert ax.get_title() == "F1" and ax.get_ylabel() == "width=64"
        for sae in ("topk", "standard"):
            (bars,) = [c for c in ax.containers if c.get_label() == sae]
            rows = summary[(summary["sae"] == sae) & (summary["width"] == 64) & summary["target_l0"].notna()]
            rows = rows.sort_values("target_l0")
            assert [p.get_height() for p in bars.patches] == pytest.approx(list(rows["f1_mean"]))
            (*_, ybars) = bars.errorbar.lines[2]
            half = [abs(seg[1][1] - seg[0][1]) / 2 for seg in ybars.get_segments()]
            assert half == pytest.approx(list(rows["f1_std"]))
        labels = {t.get_text() for legend in figures["bars_by_target_l0"].legends for t in legend.get_texts()}
        assert labels == {"topk", "standard"}
    finally:
        for fig in figures.values():
            plt.close(fig)


def test_figures_that_do_not_apply_are_left_out(tmp_path):
    for seed in (0, 1):
        for k in (2, 4):
            write_run(tmp_path, columns(target_l0=None, k=k, seed=seed), {"l0": k, "fve": 0.5, "mcc": 0.6, "f1": 0.7})
    figures = sweep_figures(load_results(tmp_path))
    try:
        assert list(figures) == ["metrics_vs_l0"]  # one width, no target L0
        assert [ax.get_ylabel() for ax in figures["metrics_vs_l0"].axes] == ["F1", "MCC", "FVE"]  # no absorption
    finally:
        for fig in figures.values():
            plt.close(fig)
    stale = tmp_path / "figures" / "bars_by_target_l0.png"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    paths = plot_sweep(tmp_path)
    assert paths == [tmp_path / "figures" / "metrics_vs_l0.png", tmp_path / "figures" / "metrics_vs_l0.pdf"]
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["metrics_vs_l0.pdf", "metrics_vs_l0.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"


@settings(max_examples=10, deadline=None)
@given(
    configs=st.lists(
        st.tuples(
            st.sampled_from(["topk", "standard", "gated"]), st.sampled_from([None, 4.0, 8.0]), st.sampled_from([16, 32])
        ),
        min_size=1,
        max_size=4,
        unique=True,
    ),
    data=st.data(),
)
def test_summarise_means_equal_a_plain_python_groupby(configs, data):
    value = st.one_of(st.none(), st.floats(-1e3, 1e3, allow_nan=False))
    expected: dict[tuple, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sae, target, width in configs:
            seeds = data.draw(st.sets(st.integers(0, 5), min_size=1, max_size=3))
            for seed in seeds:
                metrics = {"f1": data.draw(value), "mcc": data.draw(value)}
                write_run(
                    Path(tmp), columns(sae=sae, architecture=sae, target_l0=target, width=width, seed=seed), metrics
                )
                for m, v in metrics.items():
                    expected.setdefault((sae, target, width), {"f1": [], "mcc": [], "runs": []})[m].append(v)
                expected[(sae, target, width)]["runs"].append(seed)
        summary = summarise(load_results(tmp))
    assert len(summary) == len(expected)
    for _, row in summary.iterrows():
        target = None if "target_l0" not in summary or pd.isna(row["target_l0"]) else row["target_l0"]
        group = expected[(row["sae"], target, row["width"])]
        assert row["n_seeds"] == len(group["runs"])
        for m in ("f1", "mcc"):
            values = [v for v in group[m] if v is not None]
            mean = sum(values) / len(values) if values else math.nan
            assert (math.isnan(mean) and math.isnan(row[f"{m}_mean"])) or row[f"{m}_mean"] == pytest.approx(
                mean, abs=1e-9
            )
