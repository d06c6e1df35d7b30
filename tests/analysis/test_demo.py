"""The demo's superposition section: its sweep is the protocol's, and its verdict on the published ordering."""

import pandas as pd
import pytest

from analysis.experiments.demo import board_finding, demo_sweep, published_ordering
from analysis.experiments.sweep import load_sweep
from analysis.sweeps import shipped_path


def test_demo_runs_are_the_protocols_seed_zero_runs_at_target_l0_12():
    protocol = {r.id: r for r in load_sweep(shipped_path("synthsaebench-small")).runs}
    demo = demo_sweep(0).runs
    assert len(demo) == 5
    for run in demo:
        assert run.id in protocol and run.columns["target_l0"] == 12 and run.columns["seed"] == 0


def _runs(f1: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"sae": list(f1), "f1": list(f1.values())})


@pytest.mark.parametrize(
    ("f1", "holds"),
    [
        ({"matryoshka": 0.54, "batchtopk": 0.52, "jumprelu": 0.53, "standard": 0.49}, True),
        ({"matryoshka": 0.53, "batchtopk": 0.52, "jumprelu": 0.53, "standard": 0.49}, True),  # a tie at the top
        ({"matryoshka": 0.52, "batchtopk": 0.50, "jumprelu": 0.53, "standard": 0.49}, False),  # JumpReLU on top
        ({"matryoshka": 0.54, "batchtopk": 0.48, "jumprelu": 0.53, "standard": 0.49}, False),  # L1 above BatchTopK
        ({"matryoshka": 0.54, "batchtopk": 0.49, "jumprelu": 0.53, "standard": 0.49}, False),  # L1 level with it
    ],
)
def test_published_ordering_compares_f1_as_published(f1, holds):
    verdict, line = published_ordering(_runs(f1))
    assert verdict is holds
    assert ("does NOT hold" in line) is not holds and f"matryoshka {f1['matryoshka']:.3f}" in line


def test_published_ordering_averages_seeds():
    one_seed = _runs({"matryoshka": 0.60, "batchtopk": 0.5, "jumprelu": 0.5, "standard": 0.4})
    runs = pd.concat([one_seed, one_seed], ignore_index=True)
    runs.loc[0, "f1"] = 0.40  # Matryoshka's seeds 0.40 and 0.60 average to 0.50: level with the middle, so it holds
    assert published_ordering(runs)[0] is True
    runs.loc[0, "f1"] = 0.38
    assert published_ordering(runs)[0] is False


def _board(rows: list[tuple[str, float, str, float]]) -> dict:
    return {"saes": [{"variant": v, "knob": k, "model": m, "reconstruction_f1": f} for v, k, m, f in rows]}


@pytest.mark.parametrize(
    ("rows", "holds"),
    [
        ([("topk", 16, "trained", 0.402), ("topk", 16, "untrained", 0.127)], True),  # the demo's, 3.2x
        ([("topk", 16, "trained", 0.375), ("topk", 16, "untrained", 0.125)], True),  # exactly 3x
        ([("topk", 16, "trained", 0.29), ("topk", 16, "untrained", 0.10)], False),
        ([("topk", 16, "untrained", 0.06), ("topk", 16, "trained", 0.02)], False),  # the old demo: the opposite
        (  # every SAE must hold it
            [("topk", 8, "trained", 0.4), ("topk", 8, "untrained", 0.1), ("topk", 32, "trained", 0.2)]
            + [("topk", 32, "untrained", 0.1)],
            False,
        ),
    ],
)
def test_board_finding_needs_every_sae_three_times_its_random_init_twin(rows, holds):
    verdict, line = board_finding(_board(rows))
    assert verdict is holds and ("does NOT hold" in line) is not holds
    assert all(f"{v} {k:g} {f:.3f}" in line for v, k, m, f in rows if m == "trained")
