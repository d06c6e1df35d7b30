"""Figures of a sweep, drawn from its per-run table (:func:`analysis.experiments.sweep.results.load_results`):
scores against achieved L0 and against width, and SynthSAEBench-style grouped bars per target L0
(Chanin & Garriga-Alonso 2026). Every point is a configuration's mean over seeds, with the standard
deviation over seeds as error bars (none for one seed).

Series are coloured by the sweep's SAE name (``sae``, else ``architecture``). Config columns that vary and
are not on the figure's axis become panels (``source``, and facets of the bars) or separate series, so no
line ever averages or joins runs of different configurations. ``k`` and ``coefficient`` are usually set
from ``target_l0``; they split series only where they are not.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.experiments.sweep.results import METRIC_LABELS, config_keys, load_results, summarise
from analysis.figures import save_figure

FIGURES = ("metrics_vs_l0", "metrics_vs_width", "bars_by_target_l0")
LINE_METRICS = ("f1", "mcc", "mmcs_true_to_learned", "fve", "absorption")  # MMCS: Sharkey et al. (2022)'s measure
BAR_METRICS = ("f1", "mcc", "fve")
DERIVED_KNOBS = ("k", "coefficient")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", ":", "-.")


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _value(v: object) -> str:
    return f"{v:g}" if isinstance(v, float | np.floating) else str(v)


def _hue(summary: pd.DataFrame) -> list[str]:
    """The column that names the SAE (``sae``, else ``architecture``), as a list of zero or one key."""
    return [k for k in ("sae", "architecture") if k in summary][:1]


def _split_keys(summary: pd.DataFrame, along: list[str], exclude: tuple[str, ...]) -> list[str]:
    """The varying config columns that separate series (or facets): all but the hue, ``along`` (what the
    figure's axis runs over) and ``exclude``; ``k`` and ``coefficient`` only where the others do not
    determine them."""
    hue = _hue(summary)
    skip = {*along, *hue, "architecture", *exclude}
    varying = [k for k in summary.attrs["columns"] if summary[k].nunique(dropna=False) > 1 and k not in skip]
    base = [k for k in varying if k not in DERIVED_KNOBS]
    by = base + along + hue
    extra = [
        k
        for k in varying
        if k in DERIVED_KNOBS and (not by or summary.groupby(by, dropna=False)[k].nunique(dropna=False).max() > 1)
    ]
    return base + extra


def _groups(frame: pd.DataFrame, keys: list[str]) -> list[tuple[dict, pd.DataFrame]]:
    """``frame`` split by ``keys`` (null a value of its own), as (key values, rows) in sorted order."""
    if not keys:
        return [({}, frame)]
    return [
        (dict(zip(keys, values, strict=True)), rows) for values, rows in frame.groupby(keys, dropna=False, sort=True)
    ]


def _describe(values: dict, sep: str = " · ") -> str:
    """``key=value`` for the non-null values (the source by its name alone), the knob ``k``/``coefficient``
    left out where a target L0 is set."""
    target_set = "target_l0" in values and not pd.isna(values["target_l0"])
    return sep.join(
        _value(v) if k == "source" else f"{k}={_value(v)}"
        for k, v in values.items()
        if not pd.isna(v) and not (target_set and k in DERIVED_KNOBS)
    )


def _line_label(name: str, values: dict, line: pd.DataFrame) -> str:
    """The SAE's name and the series' config; a series run without a target L0 also names its knob
    (``k``/``coefficient``) where the line has one value of it."""
    if "target_l0" in values and pd.isna(values["target_l0"]):
        knobs = [k for k in DERIVED_KNOBS if k in line and k not in values and line[k].nunique(dropna=False) == 1]
        values = values | {k: line[k].iloc[0] for k in knobs}
    return " · ".join(filter(None, [name, _describe(values)]))


def _style_key(values: dict) -> tuple[str, ...]:
    """Key values as text, so null values compare equal."""
    return tuple(_value(v) for v in values.values())


def _present(summary: pd.DataFrame, metrics: tuple[str, ...]) -> list[str]:
    return [m for m in metrics if f"{m}_mean" in summary and summary[f"{m}_mean"].notna().any()]


def _errors(std: pd.Series) -> np.ndarray | None:
    """Error bar lengths, or None when every configuration has a single seed (no spread to show)."""
    return None if std.isna().all() else std.to_numpy(dtype=float)


def _legend(fig: Figure, axes: np.ndarray, title: str) -> None:
    """One legend for the figure, right of the panels, one entry per label."""
    entries: dict[str, object] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(entries.values(), entries.keys(), loc="outside right upper", title=title, fontsize="small")


def _lines(summary: pd.DataFrame, x: str, metrics: list[str], xlabel: str) -> Figure:
    """One panel per (metric, source), one errorbar line per series against ``x``: the mean of metric
    ``x`` (both axes with error bars) or a config column (error bars on the metric only)."""
    x_is_metric = f"{x}_mean" in summary
    if x_is_metric:
        along = [k for k in ("target_l0",) if k in summary] or [k for k in DERIVED_KNOBS if k in summary]
    else:
        along = [x]
    hue = _hue(summary)
    series_keys = _split_keys(summary, along, exclude=("source",))
    sources = _groups(summary, [k for k in ("source",) if k in summary])
    names = sorted(summary[hue[0]].astype(str).unique()) if hue else [""]
    palette = dict(zip(names, sns.color_palette("colorblind", len(names)), strict=True))
    styles = [_style_key(values) for values, _ in _groups(summary, series_keys)]
    fig, axes = plt.subplots(
        len(metrics),
        len(sources),
        figsize=(3.6 * len(sources) + 1.6, 2.4 * len(metrics)),
        squeeze=False,
        sharex="col",
        layout="constrained",
    )
    for j, (source, rows) in enumerate(sources):
        for i, metric in enumerate(metrics):
            ax: Axes = axes[i, j]
            for values, line in _groups(rows, hue + series_keys):
                line = line.sort_values(f"{x}_mean" if x_is_metric else x)
                name = str(values[hue[0]]) if hue else ""
                style = styles.index(_style_key({k: values[k] for k in series_keys}))
                xs = line[f"{x}_mean"] if x_is_metric else line[x]
                ax.errorbar(
                    xs.to_numpy(dtype=float),
                    line[f"{metric}_mean"].to_numpy(dtype=float),
                    yerr=_errors(line[f"{metric}_std"]),
                    xerr=_errors(line[f"{x}_std"]) if x_is_metric else None,
                    label=_line_label(name, {k: values[k] for k in series_keys}, line),
                    color=palette[name],
                    marker=MARKERS[style % len(MARKERS)],
                    linestyle=LINESTYLES[style % len(LINESTYLES)],
                    markersize=4,
                    capsize=2,
                    elinewidth=0.8,
                )
            if rows[f"{metric}_mean"].isna().all():
                ax.text(0.5, 0.5, "not defined for this source", ha="center", va="center", transform=ax.transAxes)
                ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(_label(metric))
            if i == 0 and source:
                ax.set_title(_describe(source))
            if i == len(metrics) - 1:
                ax.set_xlabel(xlabel)
            if not x_is_metric:
                widths = sorted(summary[x].dropna().unique())
                ax.set_xscale("log", base=2)
                ax.set_xticks(widths, [_value(w) for w in widths])
                ax.minorticks_off()
    _legend(fig, axes, "SAE")
    return fig


def _bars(summary: pd.DataFrame, metrics: list[str]) -> Figure:
    """One panel per (facet, metric); in each, a group of bars per target L0, one bar per SAE."""
    rows = summary[summary["target_l0"].notna()]
    hue = _hue(summary)
    facets = _groups(rows, _split_keys(summary, ["target_l0"], exclude=()))
    names = sorted(rows[hue[0]].astype(str).unique()) if hue else [""]
    palette = dict(zip(names, sns.color_palette("colorblind", len(names)), strict=True))
    fig, axes = plt.subplots(
        len(facets),
        len(metrics),
        figsize=(3.4 * len(metrics) + 1.6, 2.6 * len(facets)),
        squeeze=False,
        sharey="col",
        layout="constrained",
    )
    width = 0.8 / len(names)
    for i, (facet, frame) in enumerate(facets):
        targets = sorted(frame["target_l0"].unique())
        for j, metric in enumerate(metrics):
            ax: Axes = axes[i, j]
            for n, name in enumerate(names):
                bars = frame[frame[hue[0]].astype(str) == name] if hue else frame
                if bars.empty:
                    continue
                by_target = bars.set_index("target_l0")
                if not by_target.index.is_unique:
                    raise ValueError(f"several configurations of {name!r} at one target_l0 in facet {facet}: {bars}")
                by_target = by_target.reindex(targets)
                ax.bar(
                    np.arange(len(targets)) + (n - (len(names) - 1) / 2) * width,
                    by_target[f"{metric}_mean"].to_numpy(dtype=float),
                    width,
                    yerr=_errors(by_target[f"{metric}_std"]),
                    capsize=2,
                    error_kw={"elinewidth": 0.8},
                    label=name,
                    color=palette[name],
                )
            ax.set_xticks(range(len(targets)), [_value(t) for t in targets])
            if i == 0:
                ax.set_title(_label(metric))
            if i == len(facets) - 1:
                ax.set_xlabel("target L0")
            if j == 0 and facet:
                ax.set_ylabel(_describe(facet, sep="\n"))
    fig.suptitle("mean over seeds; error bars: std over seeds", fontsize="medium")
    _legend(fig, axes, "SAE")
    return fig


def sweep_figures(df: pd.DataFrame) -> dict[str, Figure]:
    """The sweep's figures from its per-run table (``load_results``), by name (see :data:`FIGURES`):
    ``metrics_vs_l0`` always (when the sweep has L0 and a score), ``metrics_vs_width`` when it has more
    than one width, ``bars_by_target_l0`` when runs set a target L0. Empty for a sweep with no runs."""
    if df.empty:
        return {}
    sns.set_theme(context="paper", style="whitegrid")
    summary = summarise(df)
    keys = config_keys(summary)
    figures: dict[str, Figure] = {}
    metrics = _present(summary, LINE_METRICS)
    if metrics and _present(summary, ("l0",)):
        figures["metrics_vs_l0"] = _lines(summary, "l0", metrics, "L0 (mean active latents)")
    if metrics and "width" in keys and summary["width"].nunique() > 1:
        figures["metrics_vs_width"] = _lines(summary, "width", metrics, "width (latents)")
    bar_metrics = _present(summary, BAR_METRICS)
    if bar_metrics and "target_l0" in keys:
        figures["bars_by_target_l0"] = _bars(summary, bar_metrics)
    return figures


def plot_sweep(out_dir: str | Path) -> list[Path]:
    """Draw :func:`sweep_figures` for the sweep in ``out_dir`` and write each as PNG and PDF in
    ``DIR/figures/`` (atomically); a figure the sweep no longer has (e.g. one width left) is removed.
    Returns the paths written."""
    figures = sweep_figures(load_results(out_dir))
    folder = Path(out_dir) / "figures"
    paths = []
    for name in FIGURES:
        if name in figures:
            paths += save_figure(figures[name], folder / name)
        else:
            for stale in (folder / f"{name}.png", folder / f"{name}.pdf"):
                stale.unlink(missing_ok=True)
    return paths


__all__ = ["FIGURES", "plot_sweep", "sweep_figures"]
