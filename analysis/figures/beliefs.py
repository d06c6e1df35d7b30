"""Figures of belief-state geometry: beliefs and their linear read-outs drawn in the simplex.

Three-state processes are drawn in the 2-simplex (barycentric coordinates, corners = hidden states);
larger ones in the plane of the true beliefs' first two principal components. Every point is coloured
by its *true* belief (RGB for up to three states, the first three principal components otherwise), so a
prediction panel shows where each true belief landed (Shai et al. 2024, Fig. 1 and 4).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import seaborn as sns
import torch
from matplotlib.figure import Figure

_CORNERS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]], dtype=torch.float64)


class SimplexView:
    """The 2-D projection and colours fixed by the true beliefs ``[n, S]`` (any leading shape)."""

    def __init__(self, beliefs: torch.Tensor):
        b = beliefs.reshape(-1, beliefs.shape[-1]).double()
        self.n_states = b.shape[1]
        self.mean = b.mean(0)
        if self.n_states != 3:  # principal axes of the true beliefs
            _, _, v = torch.linalg.svd(b - self.mean, full_matrices=False)
            self.axes = v[: min(3, len(v))].T
        self.colours = self._colours(b)
        xy = self.project(b)
        low, high = xy.min(0).values, xy.max(0).values
        pad = 0.25 * (high - low).max().clamp(min=1e-6)
        self.limits = ((low - pad).tolist(), (high + pad).tolist())  # every panel shares the true beliefs' frame

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """``[n, S] -> [n, 2]`` plane coordinates."""
        p = points.reshape(-1, self.n_states).double()
        if self.n_states == 3:
            return p @ _CORNERS
        xy = (p - self.mean) @ self.axes[:, :2]
        return xy if xy.shape[1] == 2 else torch.cat([xy, torch.zeros(len(xy), 1, dtype=xy.dtype)], 1)

    def _colours(self, b: torch.Tensor) -> torch.Tensor:
        if self.n_states <= 3:  # the belief itself as RGB (two states: red to green)
            return torch.cat([b, torch.zeros(len(b), 3 - self.n_states, dtype=b.dtype)], 1).clamp(0, 1)
        c = (b - self.mean) @ self.axes
        c = torch.cat([c, torch.zeros(len(c), 3 - c.shape[1], dtype=c.dtype)], 1)
        span = (c.max(0).values - c.min(0).values).clamp(min=1e-12)
        return (c - c.min(0).values) / span

    def draw(self, ax, points: torch.Tensor, title: str, max_points: int = 200_000) -> None:
        xy = self.project(points)
        keep = slice(None) if len(xy) <= max_points else torch.linspace(0, len(xy) - 1, max_points).long()
        ax.set_facecolor("black")
        if self.n_states == 3:
            corners = torch.cat([_CORNERS, _CORNERS[:1]])
            ax.plot(corners[:, 0], corners[:, 1], color="0.5", lw=0.6)
        distinct = len(torch.unique(xy[keep].round(decimals=4), dim=0))  # few distinct points: draw them big
        size = min(12.0, max(0.3, 3000 / distinct))
        ax.scatter(xy[keep, 0], xy[keep, 1], c=self.colours[keep].numpy(), s=size, lw=0, rasterized=True)
        ax.set_title(title, fontsize="small")
        ax.set_xlim(self.limits[0][0], self.limits[1][0])
        ax.set_ylim(self.limits[0][1], self.limits[1][1])
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])


def simplex_panels(beliefs: torch.Tensor, panels: dict[str, torch.Tensor], title: str) -> Figure:
    """The true beliefs, then each named prediction ``[..., S]``, side by side in one view."""
    view = SimplexView(beliefs)
    n = 1 + len(panels)
    cols = min(n, 5)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False, layout="constrained")
    view.draw(axes.flat[0], beliefs, "true beliefs" + ("" if view.n_states == 3 else " (PCA)"))
    for ax, (name, points) in zip(list(axes.flat)[1:], panels.items(), strict=False):
        view.draw(ax, points, name)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    return fig


def layer_scores(
    rows: dict[str, dict[str, float]],
    by_position: dict[str, list[float]],
    title: str,
) -> Figure:
    """Held-out MSE per hook for each model (``rows[model][hook]``), and MSE per context position."""
    sns.set_theme(context="paper", style="whitegrid")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    models = list(rows)
    hooks = list(rows[models[0]])
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        left.bar(
            [h + i * width for h in range(len(hooks))],
            [rows[model].get(k, math.nan) for k in hooks],
            width,
            label=model,
        )
    left.set_xticks([h + 0.4 - width / 2 for h in range(len(hooks))], hooks, rotation=35, ha="right")
    left.set_yscale("log")
    left.set_ylabel("held-out MSE to beliefs")
    left.legend(fontsize="small")
    for name, values in by_position.items():
        right.plot(range(1, len(values) + 1), values, marker="o", label=name)
    right.set_yscale("log")
    right.set_xlabel("tokens seen")
    right.set_ylabel("held-out MSE")
    right.legend(fontsize="small")
    fig.suptitle(title)
    return fig


def emergence_curve(steps: list[int], series: dict[str, list[float]], title: str, ylabel: str) -> Figure:
    """One line per series (e.g. R² of the final layer, excess loss) against training tokens."""
    sns.set_theme(context="paper", style="whitegrid")
    fig, ax = plt.subplots(figsize=(5, 3.4), layout="constrained")
    for name, values in series.items():
        ax.plot(steps, values, marker="o", label=name)
    ax.set_xlabel("training tokens")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    fig.suptitle(title)
    return fig
