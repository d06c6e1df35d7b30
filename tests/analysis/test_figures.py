"""Figure functions draw from results and return a Figure; only save_figure writes (PNG and PDF) and closes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from analysis.figures import save_figure
from analysis.figures.beliefs import emergence_curve, layer_scores, simplex_panels
from analysis.figures.games import board_maps, frontier
from games import get_game


def figures() -> dict[str, Figure]:
    beliefs = torch.distributions.Dirichlet(torch.ones(3)).sample((50,))
    board = get_game("othello").board
    saes = [
        {"variant": "topk", "model": m, "l0": l0, "reconstruction_f1": f, "coverage": f / 2}
        for m, f in (("trained", 0.6), ("untrained", 0.1))
        for l0 in (8, 32)
    ]
    return {
        "simplex_panels": simplex_panels(beliefs, {"read-out": beliefs}, "simplex"),
        "layer_scores": layer_scores({"trained": {"h0": 0.1, "h1": 0.01}}, {"h1": [0.1, 0.01]}, "layers"),
        "emergence_curve": emergence_curve([0, 10], {"R²": [0.1, 0.9]}, "emergence", "R²"),
        "board_maps": board_maps({"probe": np.linspace(0, 1, len(board.squares))}, "maps", "accuracy", board),
        "frontier": frontier(saes, "frontier"),
    }


def test_figure_functions_return_figures_and_write_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    drawn = figures()
    try:
        assert all(isinstance(fig, Figure) for fig in drawn.values())
        assert list(tmp_path.iterdir()) == []  # nothing written by drawing
        assert drawn["simplex_panels"].get_suptitle() == "simplex"
        # the trained line lies above the random-init line, as the data say
        ax = drawn["frontier"].axes[0]
        lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
        assert list(lines["topk (trained)"]) == [0.6, 0.6] and list(lines["topk (random init)"]) == [0.1, 0.1]
    finally:
        for fig in drawn.values():
            plt.close(fig)


def test_save_figure_writes_png_and_pdf_and_closes(tmp_path):
    fig = emergence_curve([0, 1], {"x": [0.0, 1.0]}, "t", "y")
    paths = save_figure(fig, tmp_path / "sub" / "curve")
    assert [p.name for p in paths] == ["curve.png", "curve.pdf"]
    assert all(p.stat().st_size > 1_000 for p in paths)
    assert not plt.fignum_exists(fig.number)
