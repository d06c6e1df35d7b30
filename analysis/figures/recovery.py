"""Figures from saved results: decoder-vs-truth cosine heatmaps and recovery against L0.

Each function takes what an experiment saved and returns a ``Figure``
(:func:`analysis.figures.save_figure` writes it as PNG and PDF).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns
import torch
from matplotlib.figure import Figure

from analysis.experiments.recovery import RecoveryRow
from analysis.metrics.recovery import cosine_matrix


def ordered_cosines(true_dirs: torch.Tensor, w_dec: torch.Tensor, max_features: int = 256) -> torch.Tensor:
    """Cosines ``[F', m']`` for the first ``max_features`` true features and the latents whose best
    match (largest |cos|) is among them, latents ordered by that best match."""
    cos = cosine_matrix(true_dirs.float(), w_dec.float())
    best = cos.abs().argmax(0)
    keep = torch.nonzero(best < max_features).flatten()
    order = keep[torch.argsort(best[keep], stable=True)]
    return cos[:max_features][:, order]


def cosine_heatmaps(panels: dict[str, torch.Tensor], title: str) -> Figure:
    """One heatmap per SAE: true features (rows) against latents ordered by best match (columns),
    signed cosine on a diverging colormap centred at 0."""
    sns.set_theme(context="paper", style="white")
    n = len(panels)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.8 * rows), squeeze=False, layout="constrained")
    for i, (ax, (name, cos)) in enumerate(zip(axes.flat, panels.items(), strict=False)):
        image = ax.imshow(cos.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(name, fontsize="small")
        if i % cols == 0:
            ax.set_ylabel("true feature")
        if i >= n - cols:
            ax.set_xlabel("latent (by best match)")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.6, label="cosine(decoder row, true direction)")
    fig.suptitle(title)
    return fig


def recovery_vs_l0(rows: list[RecoveryRow]) -> Figure:
    """MCC and F1 against L0, one line per variant, one column per source."""
    sns.set_theme(context="paper", style="whitegrid")
    sources = sorted({r.source for r in rows})
    fig, axes = plt.subplots(
        2, len(sources), figsize=(4.2 * len(sources), 6.0), squeeze=False, sharex="col", layout="constrained"
    )
    variants = sorted({r.variant for r in rows})
    palette = dict(zip(variants, sns.color_palette("colorblind", len(variants)), strict=False))
    for j, source in enumerate(sources):
        for i, metric in enumerate(("mcc", "f1")):
            ax = axes[i, j]
            for variant in variants:
                pts = sorted((r.l0, getattr(r, metric)) for r in rows if r.source == source and r.variant == variant)
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=variant, color=palette[variant])
            ax.set_ylabel(metric.upper())
            ax.set_ylim(0, 1.02)
            if i == 0:
                ax.set_title(source)
            else:
                ax.set_xlabel("L0 (mean active latents)")
    axes[0, -1].legend(fontsize="small", loc="lower right")
    return fig
