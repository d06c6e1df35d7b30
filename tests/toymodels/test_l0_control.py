"""The L0 controller: a penalty SAE given ``target_l0`` steers its coefficient until it holds that L0."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from groundtruth import Constant, SparseFeatureConfig, SparseFeatureModel
from groundtruth.strategies import seeds
from toymodels.sae import SAEConfig, make_sae, train_sae
from toymodels.training import TrainConfig

# 64 features in 32 dimensions, true L0 about 5; 600 steps of 256 at lr 3e-3 (about 2-4 s per SAE).
MODEL = SparseFeatureModel(SparseFeatureConfig(d=32, n_features=64, firing=Constant(0.08), seed=0))
HELD_OUT = MODEL.eval_set(4000)


def held_out_l0(arch: str, target: float, seed: int, start: float = 1.0) -> tuple[float, float]:
    sae = make_sae(SAEConfig(arch, 32, 128, seed=seed, sparsity_coefficient=start, target_l0=target))
    train_sae(sae, MODEL.activations(256, seed=seed), TrainConfig(steps=600, lr=3e-3), progress=False)
    with torch.no_grad():
        return float((sae.encode(HELD_OUT.x) > 0).sum(-1).float().mean()), float(sae.coefficient)


@pytest.mark.parametrize("arch", ["standard", "gated", "jumprelu", "p_anneal"])
@given(target=st.sampled_from([3.0, 8.0]), seed=seeds())
@settings(max_examples=2, deadline=None)
def test_penalty_saes_reach_their_target_l0_within_ten_percent(arch, target, seed):
    """Measured over 8 seeds each, on held-out data: standard and gated land within 7.8% of targets 3 and 8,
    JumpReLU within 4.0% and p-annealing within 5.0%. Steering the coefficient alone, p-annealing fell
    short by up to 11% (at 3) and 23% (at 8)."""
    l0, coefficient = held_out_l0(arch, target, seed)
    assert abs(l0 - target) <= 0.1 * target, (l0, coefficient)


@given(seed=seeds())
@settings(max_examples=1, deadline=None)
def test_jumprelu_reaches_a_target_its_coefficient_alone_cannot(seed):
    """At target 16 the reconstruction settles below target whatever the coefficient: steering it alone
    gave 13.1-16.2 over 8 seeds (mean 14.5, with 46-58 of 128 latents dead). Scaling the thresholds
    down as well gave 15.4-15.8 (no dead latent); the test allows 6%."""
    l0, coefficient = held_out_l0("jumprelu", 16.0, seed)
    assert abs(l0 - 16.0) <= 0.06 * 16.0, (l0, coefficient)


def test_the_coefficient_moves_the_way_the_knob_does():
    """A lower target needs a larger penalty; from the same start the controller finds both."""
    low, high = held_out_l0("standard", 3.0, 0), held_out_l0("standard", 8.0, 0)
    assert low[1] > high[1] and low[0] < high[0]


def test_steer_l0_hand_checked():
    sae = make_sae(SAEConfig("standard", 4, 8, sparsity_coefficient=2.0, target_l0=1.9))
    codes = torch.tensor([[1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0]])
    sae.training_progress = 0.6  # past the annealed goal: steer to the target itself
    sae.steer_l0(codes)  # batch L0 3 against 1.9: x (3.1 / 2.0) ** 0.02
    assert float(sae.coefficient) == pytest.approx(2.0 * (3.1 / 2.0) ** 0.02, rel=1e-12)
    assert sae.sparsity_coefficient() == float(sae.coefficient)
    plain = make_sae(SAEConfig("standard", 4, 8, sparsity_coefficient=2.0))
    assert plain.sparsity_coefficient() == 2.0 and "coefficient" not in plain.state_dict()
    assert "l0_start" not in plain.state_dict()


def test_the_goal_anneals_geometrically_from_the_first_batch_l0():
    """First batch L0 8.4 against target 2.1: the goal at progress 0.3 (half of 0.6) is sqrt(8.4 * 2.1) = 4.2."""
    sae = make_sae(SAEConfig("standard", 4, 12, sparsity_coefficient=2.0, target_l0=2.1))
    dense = torch.zeros(5, 12)
    dense[:, :8] = 1.0
    dense[:2, 8] = 1.0  # L0 (5 * 8 + 2) / 5 = 8.4
    sae.steer_l0(dense)  # progress 0: the goal is the batch's own L0, so the coefficient holds
    assert float(sae.l0_start) == pytest.approx(8.4) and float(sae.coefficient) == pytest.approx(2.0, rel=1e-12)
    for progress, goal in [(0.3, 4.2), (0.6, 2.1), (0.9, 2.1)]:
        sae.training_progress = progress
        assert sae.l0_goal() == pytest.approx(goal, rel=1e-6)  # the batch L0 is a float32 mean
    sae.training_progress = 0.3
    sae.steer_l0(dense)
    assert float(sae.coefficient) == pytest.approx(2.0 * (8.5 / 4.3) ** 0.02, rel=1e-6)
    below = make_sae(SAEConfig("standard", 4, 12, target_l0=9.0))
    below.steer_l0(dense)  # a start below target: steer to the target from the first step
    assert below.l0_goal() == 9.0


def test_jumprelu_scales_its_thresholds_down_only_below_target():
    sae = make_sae(SAEConfig("jumprelu", 4, 8, sparsity_coefficient=2.0, target_l0=3.9, jump_init_threshold=0.5))
    below = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]])  # L0 0.5 against 3.9
    sae.steer_l0(below)  # ratio (0.5 + 0.1) / (3.9 + 0.1) = 0.15
    assert torch.equal(sae.threshold, torch.full((8,), 0.5) * 0.15**0.1)
    assert float(sae.coefficient) == pytest.approx(2.0 * 0.15**0.02, rel=1e-12)
    before = sae.threshold.detach().clone()
    above = torch.ones(2, 8)  # L0 8: the penalty, through its coefficient, raises the thresholds
    sae.steer_l0(above)
    assert torch.equal(sae.threshold, before)
    assert float(sae.coefficient) == pytest.approx(2.0 * 0.15**0.02 * (8.1 / 4.0) ** 0.02, rel=1e-12)


def test_p_anneal_learns_the_trend_of_its_coefficient():
    """A second integrator: under a constant error the per-step factor grows, so log(coefficient) grows
    quadratically, not linearly, in the number of steps."""
    sae = make_sae(SAEConfig("p_anneal", 4, 8, sparsity_coefficient=2.0, target_l0=1.9))
    codes = torch.tensor([[1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0]])
    r = 3.1 / 2.0  # batch L0 3 against 1.9
    sae.training_progress = 0.6  # past the annealed goal
    sae.steer_l0(codes)
    sae.steer_l0(codes)
    assert float(sae.coefficient_trend) == pytest.approx(r ** (2 * 1e-4), rel=1e-12)
    assert float(sae.coefficient) == pytest.approx(2.0 * r ** (3 * 1e-4) * r ** (2 * 0.02), rel=1e-12)
    # only p-annealing carries the trend, and only under a target
    assert "coefficient_trend" not in make_sae(SAEConfig("standard", 4, 8, target_l0=1.9)).state_dict()
    assert "coefficient_trend" not in make_sae(SAEConfig("p_anneal", 4, 8)).state_dict()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"architecture": "topk", "k": 2, "target_l0": 2.0}, "topk sets its L0 with k"),
        ({"target_l0": 0.0}, "target_l0"),
        ({"target_l0": 9.0}, "target_l0"),
        ({"target_l0": 2.0, "sparsity_coefficient": 0.0}, "sparsity_coefficient"),
    ],
)
def test_bad_targets_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        SAEConfig(**{"architecture": "standard", "d_in": 4, "d_sae": 8, **fields})
