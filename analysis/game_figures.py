"""Figures of a board-game experiment, from its ``results.json``: 8×8 maps of probe accuracy and of the
best latent's F1 per square, and the coverage / reconstruction frontier against L0 (Karvonen et al. 2024)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis.figures import save_figure  # noqa: E402
from games.othello import square_name  # noqa: E402


def board_maps(panels: dict[str, np.ndarray], stem: Path, title: str, label: str) -> list[Path]:
    """One 8×8 map per panel (rows A–H, columns 1–8, as OthelloGPT names squares); values in [0, 1],
    NaN (a class that never occurs there) left blank."""
    sns.set_theme(context="paper", style="white")
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n + 0.8, 2.7), squeeze=False, layout="constrained")
    for ax, (name, values) in zip(axes[0], panels.items(), strict=True):
        image = ax.imshow(np.asarray(values, dtype=float).reshape(8, 8), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(8), [str(c) for c in range(1, 9)])
        ax.set_yticks(range(8), list("ABCDEFGH"))
        ax.set_title(name, fontsize="small")
    fig.colorbar(image, ax=axes, shrink=0.8, label=label)
    fig.suptitle(title)
    return save_figure(fig, stem)


def frontier(rows: list[dict], stem: Path, title: str) -> list[Path]:
    """Board reconstruction F1 and coverage against L0, one colour per SAE variant, trained model solid and
    random-init model dashed (the paper's frontier plot)."""
    sns.set_theme(context="paper", style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), layout="constrained")
    variants = sorted({r["variant"] for r in rows})
    colours = dict(zip(variants, sns.color_palette("colorblind", len(variants)), strict=True))
    for ax, metric, name in (
        (axes[0], "reconstruction_f1", "board reconstruction F1"),
        (axes[1], "coverage", "coverage"),
    ):
        for variant in variants:
            for model, style in (("trained", "-o"), ("untrained", "--x")):
                points = sorted((r["l0"], r[metric]) for r in rows if r["variant"] == variant and r["model"] == model)
                if points:
                    label = f"{variant} ({'trained' if model == 'trained' else 'random init'})"
                    ax.plot(*zip(*points, strict=True), style, color=colours[variant], label=label)
        ax.set_xscale("log")
        ax.set_xlabel("L0 (active latents per position)")
        ax.set_ylabel(name)
        ax.set_ylim(0, 1)
    axes[1].legend(fontsize="x-small", loc="best")
    fig.suptitle(title)
    return save_figure(fig, stem)


def make_game_figures(out_dir: Path, results: dict | None = None) -> list[Path]:
    """Draw every figure of a :func:`analysis.game_experiment.run_games` folder."""
    out_dir = Path(out_dir)
    results = results if results is not None else json.loads((out_dir / "results.json").read_text())
    hook = results["hook"]
    written = frontier(results["saes"], out_dir / "frontier", f"Othello SAEs on {hook}: trained vs random-init model")
    probe = {
        f"probe, trained ({results['trained']['probe'][hook]:.3f})": results["trained"]["probe_by_square"][hook],
        f"probe, random init ({results['untrained']['probe'][hook]:.3f})": results["untrained"]["probe_by_square"][
            hook
        ],
    }
    written += board_maps(probe, out_dir / "probe_by_square", f"mine/theirs/empty probe accuracy on {hook}", "accuracy")
    trained = [r for r in results["saes"] if r["model"] == "trained"]
    if trained:
        best = max(trained, key=lambda r: r["reconstruction_f1"])
        f1 = best["f1_by_property"]
        panels = {
            f"{kind}": [f1.get(f"{kind}@{square_name(s)}", np.nan) for s in range(64)]
            for kind in ("mine", "theirs", "empty")
        }
        written += board_maps(
            panels,
            out_dir / "latent_f1_by_square",
            f"best latent's F1 per square: {best['variant']} {best['knob']:g} (L0 {best['l0']:.0f})",
            "F1",
        )
    return written
