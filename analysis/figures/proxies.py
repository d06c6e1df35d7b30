"""SAEBench's proxies against ground truth, one point per SAE, from a sweep's ``proxies.csv``
(:func:`analysis.experiments.proxies.score_sweep`): a proxy that tracks ground truth ranks the points along
the diagonal. Rows: the ground truth of the sweep's source (F1 and MCC, or board reconstruction F1 and
coverage); columns: the proxies; colour: the SAE; marker: the target L0;
each panel's title gives Spearman's rank correlation over all points."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from analysis.experiments.proxies import HEADLINE_PROXIES, ground_truth_columns, require_columns
from analysis.figures import save_figure

PROXY_LABELS = {
    "sparse_probing_top_1": "top-1 sparse probing accuracy",
    "sparse_probing_top_2": "top-2 sparse probing accuracy",
    "sparse_probing_top_5": "top-5 sparse probing accuracy",
}
MARKERS = ("o", "s", "^", "D", "v")
TRUTH_LABELS = {"f1": "F1", "mcc": "MCC", "board_f1": "board reconstruction F1", "coverage": "coverage"}


def _label(metric: str) -> str:
    if metric in PROXY_LABELS:
        return PROXY_LABELS[metric]
    kind, _, n = metric.partition("_top_")
    return f"{kind.upper()}, {n} latents ablated" if n else metric.upper()


def proxies_vs_ground_truth(table: pd.DataFrame, proxies: Sequence[str] = HEADLINE_PROXIES) -> Figure:
    """The figure described in the module docstring, from the per-SAE table ``score_sweep`` writes."""
    truths = ground_truth_columns(table)
    require_columns(table, proxies)
    hue = "sae" if "sae" in table else "architecture"
    names = sorted(table[hue].astype(str).unique())
    palette = dict(zip(names, sns.color_palette("colorblind", len(names)), strict=True))
    # one marker per target L0; a sweep that sets k or a coefficient instead has none (NaN or no column)
    levels = sorted(table["target_l0"].dropna().unique()) if "target_l0" in table else []
    levels = levels or [None]
    sns.set_theme(context="paper", style="whitegrid")
    fig, axes = plt.subplots(
        len(truths),
        len(proxies),
        figsize=(3.0 * len(proxies) + 1.6, 2.7 * len(truths)),
        squeeze=False,
        layout="constrained",
    )
    for i, truth in enumerate(truths):
        for j, proxy in enumerate(proxies):
            ax = axes[i, j]
            for name in names:
                for m, level in enumerate(levels):
                    rows = table[
                        (table[hue].astype(str) == name)
                        & ((table["target_l0"] == level) if level is not None else True)
                    ]
                    label = name if level is None else f"{name}, L0 {level:g}"
                    ax.scatter(
                        rows[truth],
                        rows[proxy],
                        color=palette[name],
                        marker=MARKERS[m % len(MARKERS)],
                        s=22,
                        label=label,
                    )
            rho = spearmanr(table[truth], table[proxy]).statistic
            ax.set_title(f"Spearman ρ = {rho:.2f}", fontsize="medium")
            ax.set_xlabel(f"ground-truth {TRUTH_LABELS[truth]}")
            ax.set_ylabel(_label(proxy))
    entries: dict[str, object] = {}
    for handle, label in zip(*axes[0, 0].get_legend_handles_labels(), strict=True):
        entries.setdefault(label, handle)
    fig.legend(entries.values(), entries.keys(), loc="outside right upper", fontsize="small", title=hue)
    return fig


def draw_proxies(out_dir: str | Path, proxies: Sequence[str] = HEADLINE_PROXIES) -> list[Path]:
    """Draw :func:`proxies_vs_ground_truth` from ``out_dir/proxies.csv`` to ``out_dir/figures/proxies``
    (PNG and PDF); returns the paths."""
    out = Path(out_dir)
    path = out / "proxies.csv"
    if not path.is_file():
        raise ValueError(f"out_dir={str(out)!r} has no proxies.csv (score the sweep first)")
    return save_figure(proxies_vs_ground_truth(pd.read_csv(path), proxies), out / "figures" / "proxies")


__all__ = ["draw_proxies", "proxies_vs_ground_truth"]
