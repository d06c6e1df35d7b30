"""Figures drawn from saved results: recovery (cosine heatmaps, scores against L0), belief geometry and
board games. Each drawing function returns a matplotlib ``Figure`` (show it in a notebook, or write it
with :func:`save_figure`); no module here selects a matplotlib backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from groundtruth.atomic import atomic_file


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` (each atomically: an interrupted write leaves the old file) and
    close the figure; returns the two paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for p in paths:
        with atomic_file(p) as f:
            fig.savefig(f, format=p.suffix[1:], dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


__all__ = ["save_figure"]
