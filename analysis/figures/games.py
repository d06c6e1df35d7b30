"""Figures of a board-game experiment, from its ``results.json``: 8×8 maps of probe accuracy and of the
best latent's F1 per square, and the coverage / reconstruction frontier against L0 (Karvonen et al. 2024)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from analysis.figures import save_figure
from games import Board, get_game


def board_maps(panels: dict[str, np.ndarray], title: str, label: str, board: Board) -> Figure:
    """One map of the board per panel (a value per square, in square order), drawn as the game draws its
    board (Othello as OthelloGPT names it, rows A–H; chess from white's side, rank 8 at the top); values in
    [0, 1], NaN (a class that never occurs there) left blank."""
    sns.set_theme(context="paper", style="white")
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n + 0.8, 2.7), squeeze=False, layout="constrained")
    for ax, (name, values) in zip(axes[0], panels.items(), strict=True):
        image = ax.imshow(np.asarray(values, dtype=float)[np.array(board.rows)], cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(board.column_names)), list(board.column_names))
        ax.set_yticks(range(len(board.row_names)), list(board.row_names))
        ax.set_title(name, fontsize="small")
    fig.colorbar(image, ax=axes, shrink=0.8, label=label)
    fig.suptitle(title)
    return fig


def frontier(rows: list[dict], title: str) -> Figure:
    """Board reconstruction F1 and coverage against L0, one colour per SAE variant, trained model solid and
    random-init model dashed (the paper's frontier plot)."""
    sns.set_theme(context="paper", style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), layout="constrained")
    variants = sorted({r["variant"] for r in rows})
    colours = dict(zip(variants, sns.color_palette("colorblind", len(variants)), strict=True))
    for ax, metric, name in (
        (axes[0], "reconstruction_f1", "board reconstruction F1 (pieces)"),
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
    return fig


def make_game_figures(out_dir: Path, results: dict | None = None) -> list[Path]:
    """Draw every figure of a :func:`analysis.experiments.games.run_games` folder."""
    out_dir = Path(out_dir)
    results = results if results is not None else json.loads((out_dir / "results.json").read_text())
    game, hook, board, pieces = results["config"]["game"], results["hook"], results["board"], results["pieces"]
    drawn = get_game(game).board
    title = f"{game.capitalize()} SAEs on {hook}: trained vs random-init model"
    written = save_figure(frontier(results["saes"], title), out_dir / "frontier")
    probe = {
        f"probe, {name.replace('untrained', 'random init')} ({results[name]['probe'][hook]:.3f})": results[name][
            "probe_by_square"
        ][hook]
        for name in ("trained", "untrained")
    }
    maps = board_maps(probe, f"{'/'.join(board)} probe accuracy on {hook}", "accuracy", drawn)
    written += save_figure(maps, out_dir / "probe_by_square")
    trained = [r for r in results["saes"] if r["model"] == "trained"]
    if trained:
        best = max(trained, key=lambda r: r["reconstruction_f1"])
        f1 = best["f1_by_property"]
        per_class = {k: np.array([f1.get(f"{k}@{square}", np.nan) for square in drawn.squares]) for k in board}
        if len(board) > 3:  # many classes (chess): the empty squares, and the mean over the pieces
            with np.errstate(all="ignore"):
                mean = np.nanmean(np.stack([per_class[k] for k in pieces]), 0)
            per_class = {drawn.empty: per_class[drawn.empty], "pieces (mean over classes)": mean}
        title = f"best latent's F1 per square: {best['variant']} {best['knob']:g} (L0 {best['l0']:.0f})"
        written += save_figure(board_maps(per_class, title, "F1", drawn), out_dir / "latent_f1_by_square")
    return written
