"""The results table of a sweep, read only from its saved run folders (``DIR/runs/<id>/run.json`` and
``DIR/failed/<id>.json``), so it can be rebuilt at any time, also while the sweep still runs.

:func:`load_results` gives one row per finished run, :func:`summarise` averages seeds per configuration
(a configuration is every ``columns`` key except ``seed``), :func:`write_results` saves that summary as
``DIR/results.csv`` and returns it as a text table.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from groundtruth.atomic import write_text_atomic

logger = logging.getLogger(__name__)

# The metrics the text table shows first, in this order, when the sweep has them.
HEADLINE_METRICS = ("l0", "fve", "mcc", "f1", "absorption", "dead")
METRIC_LABELS = {"l0": "L0", "fve": "FVE", "mcc": "MCC", "f1": "F1", "mmcs_true_to_learned": "MMCS (true→learned)"}
# The other metrics of a ground-truth source: in results.csv, not in the text table, as are per-hook metrics
# (``name@hook``). Metrics outside both sets (a trained model's hook has its own) are shown in the table after
# the headline ones.
DETAIL_METRICS = frozenset(
    {
        "mse",
        "mmcs_true_to_learned",
        "mmcs_learned_to_true",
        "precision",
        "recall",
        "n_eval",
        "shrinkage",
        "gamma",
        "uniqueness",
        "final_coefficient",
        # the splice's parts (analysis.metrics.splice); its scores (ce_loss_score, kl_div_score, ...) are shown
        "ce_loss_without_sae",
        "ce_loss_with_sae",
        "ce_loss_with_ablation",
        "ce_loss_with_mean_ablation",
        "kl_div_with_ablation",
        "kl_div_with_mean_ablation",
        "n_positions",
        "loss_without_sae",
        "loss_with_sae",
        "loss_with_ablation",
        "loss_with_mean_ablation",
    }
)


def _sweep_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if not (out / "runs").is_dir() and not (out / "failed").is_dir():
        raise ValueError(f"out_dir={str(out)!r} is not a sweep output folder (it has no runs/ and no failed/)")
    return out


def _scalar(value: Any) -> Any:
    """A config value as a table cell: lists and tables become their JSON text, so rows can be grouped."""
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else value


def _read(path: Path, required: tuple[str, ...]) -> dict | None:
    """The JSON object in ``path`` holding the ``required`` keys (objects where the format has objects),
    or None, with a warning, when it cannot be read as one."""
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        for key in required:
            if key not in record:
                raise ValueError(f"no {key!r}")
        for key in ("columns", "metrics", "timings"):
            if not isinstance(record.get(key, {}), dict):
                raise ValueError(f"{key!r} is not an object")
        return record
    except (OSError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        logger.warning("skipping %s: unreadable (%s)", path, err)
        return None


def _union(dicts: list[dict]) -> list[str]:
    """The keys of ``dicts`` in order of first appearance."""
    return list(dict.fromkeys(key for d in dicts for key in d))


def _table(rows: list[dict], column_keys: list[str], **attrs: list[str]) -> pd.DataFrame:
    """Rows as a DataFrame sorted by the config columns, then seed; integer config columns stay integers
    where some runs have null (pandas' nullable Int64)."""
    df = pd.DataFrame(rows, columns=list(dict.fromkeys(key for row in rows for key in row)) or ["id"])
    for key in column_keys:
        values = [row[key] for row in rows if row[key] is not None]  # as read: the frame has made them floats
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            df[key] = df[key].astype("Int64")
    order = [key for key in column_keys if key != "seed"] + [key for key in column_keys if key == "seed"]
    if order:
        df = df.sort_values(order, na_position="last", kind="stable", ignore_index=True)
    df.attrs.update(columns=column_keys, **attrs)
    return df


def load_results(out_dir: str | Path) -> pd.DataFrame:
    """One row per finished run of the sweep in ``out_dir``: ``id``, every ``columns`` key, every metric
    (NaN where a run lacks it), the timings and ``device``; sorted by the columns, then seed.

    ``df.attrs`` names the config columns (``"columns"``), the metrics (``"metrics"``) and the timings
    (``"timings"``), which :func:`summarise` and the figures use."""
    out = _sweep_dir(out_dir)
    records = [_read(p, ("id", "columns", "metrics")) for p in sorted(out.glob("runs/*/run.json"))]
    records = [r for r in records if r is not None]
    column_keys = _union([r["columns"] for r in records])
    metric_keys = _union([r["metrics"] for r in records])
    timing_keys = _union([r.get("timings", {}) for r in records])
    names = ["id", *column_keys, *metric_keys, *timing_keys, "device"]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(
            f"sweep {str(out)!r}: the names {clash} are used by more than one of id/columns/metrics/timings/device"
        )
    rows = []
    for r in records:
        columns, metrics, timings = r["columns"], r["metrics"], r.get("timings", {})
        rows.append(
            {"id": r["id"]}
            | {k: _scalar(columns.get(k)) for k in column_keys}
            | {k: math.nan if metrics.get(k) is None else float(metrics[k]) for k in metric_keys}
            | {k: math.nan if timings.get(k) is None else float(timings[k]) for k in timing_keys}
            | {"device": r.get("device")}
        )
    return _table(rows, column_keys, metrics=metric_keys, timings=timing_keys)


def load_failures(out_dir: str | Path) -> pd.DataFrame:
    """One row per failed run of the sweep in ``out_dir`` (``DIR/failed/<id>.json``): ``id``, every
    ``columns`` key and ``error``; the traceback stays in the file."""
    out = _sweep_dir(out_dir)
    records = [_read(p, ("id", "columns", "error")) for p in sorted(out.glob("failed/*.json"))]
    records = [r for r in records if r is not None]
    column_keys = _union([r["columns"] for r in records])
    rows = [
        {"id": r["id"]} | {k: _scalar(r["columns"].get(k)) for k in column_keys} | {"error": str(r["error"])}
        for r in records
    ]
    return _table(rows, column_keys)


def config_keys(df: pd.DataFrame) -> list[str]:
    """The config columns that identify a configuration of ``df`` (a :func:`load_results` or
    :func:`summarise` frame): every ``columns`` key except ``seed``, less those null for every run."""
    if "columns" not in df.attrs:
        raise ValueError("df has no attrs['columns']: pass the DataFrame of load_results (or a slice of it)")
    return [k for k in df.attrs["columns"] if k != "seed" and k in df and df[k].notna().any()]


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Seeds averaged per configuration: the config columns (:func:`config_keys`), ``n_seeds`` (the runs
    in the group) and, for each metric, ``<metric>_mean`` and ``<metric>_std`` (over seeds, ddof 1, so
    NaN for one seed). A null config value is a value of its own (it is a group, not dropped)."""
    keys = config_keys(df)
    metrics = df.attrs.get("metrics", [])
    if not keys:
        raise ValueError("df has no config column with a value to group by")
    groups = df.groupby(keys, dropna=False, sort=True)
    if "seed" in df and (groups["seed"].nunique() < groups.size()).any():
        logger.warning("some configurations have several runs with the same seed: their columns do not tell them apart")
    parts = [groups.size().rename("n_seeds")]
    for m in metrics:
        parts += [groups[m].mean().rename(f"{m}_mean"), groups[m].std(ddof=1).rename(f"{m}_std")]
    summary = pd.concat(parts, axis=1).reset_index()
    summary.attrs = {"columns": keys, "metrics": list(metrics)}
    return summary


def _cells(means: pd.Series, stds: pd.Series) -> list[str]:
    """``mean ± std`` per row (the mean alone for one seed), with decimals that suit the column's size."""
    top = means.abs().max()
    decimals = 3 if not top >= 2 else 1 if top < 1000 else 0  # 3 for scores in [0, 1] (and all-NaN columns)
    return [
        "n/a" if math.isnan(m) else f"{m:.{decimals}f}" if math.isnan(s) else f"{m:.{decimals}f} ± {s:.{decimals}f}"
        for m, s in zip(means, stds, strict=True)
    ]


def format_table(summary: pd.DataFrame) -> str:
    """The summary as text: a line of the settings every configuration shares, then one line per
    configuration with the config columns that vary (``architecture`` only where it is not the ``sae``
    name), the headline metrics (and any metric a ground-truth source does not have) as ``mean ± std``,
    and the number of seeds."""
    keys = summary.attrs["columns"]
    varying = [k for k in keys if summary[k].nunique(dropna=False) > 1]
    if "architecture" in varying and "sae" in summary and summary["architecture"].equals(summary["sae"]):
        varying.remove("architecture")
    fixed = [k for k in keys if summary[k].nunique(dropna=False) == 1]
    present = [m for m in summary.attrs["metrics"] if summary[f"{m}_mean"].notna().any()]
    shown = [m for m in HEADLINE_METRICS if m in present]
    shown += [m for m in present if m not in HEADLINE_METRICS and m not in DETAIL_METRICS and "@" not in m]
    table = summary[varying].astype(object).where(summary[varying].notna(), "-")
    for m in shown:
        table[METRIC_LABELS.get(m, m)] = _cells(summary[f"{m}_mean"], summary[f"{m}_std"])
    table["seeds"] = summary["n_seeds"]
    settings = ", ".join(f"{k}={summary[k].iloc[0]}" for k in fixed)
    return f"all runs: {settings}\n{table.to_string(index=False)}" if fixed else table.to_string(index=False)


def write_results(out_dir: str | Path) -> tuple[str, Path]:
    """Write ``DIR/results.csv`` (one row per configuration, see :func:`summarise`) atomically and
    return the text table (:func:`format_table`, plus a line on failed runs) and the CSV's path."""
    out = _sweep_dir(out_dir)
    runs = load_results(out)
    failures = load_failures(out)
    path = out / "results.csv"
    if len(runs):
        summary = summarise(runs)
        write_text_atomic(path, summary.to_csv(index=False))
        text = format_table(summary)
    else:
        write_text_atomic(path, "")
        text = f"no finished runs in {out}"
    if len(failures):
        text += f"\n{len(failures)} run(s) failed: their errors are in {out / 'failed'}/<id>.json"
    return text, path
