"""The config base: every config round-trips through dicts and JSON, nested configs by their kind, and
bad data is refused naming what is wrong."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.experiments.beliefs import BeliefConfig
from analysis.experiments.games import GameConfig
from groundtruth import strategies as gts
from groundtruth.config import Config
from groundtruth.firing import Constant, Zipf
from groundtruth.sparse_model import SparseFeatureConfig
from toymodels.sae import SAEConfig
from toymodels.sae.strategies import sae_configs
from toymodels.superposition import ToyModelConfig
from toymodels.training import TrainConfig
from toymodels.transformer import TransformerConfig


@given(cfg=gts.sparse_feature_configs() | sae_configs())
@settings(max_examples=40, deadline=None)
def test_drawn_configs_round_trip_through_dicts_and_json(cfg):
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    assert type(cfg).from_json(cfg.to_json()) == cfg
    assert json.loads(cfg.to_json()) == cfg.to_dict()  # plain JSON values only


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(steps=5, betas=(0.8, 0.9)),
        ToyModelConfig(),
        TransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, d_mlp=16, n_ctx=4, d_vocab=3),
        BeliefConfig(),
        GameConfig(),
    ],
    ids=lambda c: type(c).__name__,
)
def test_every_config_class_round_trips(cfg):
    assert isinstance(cfg, Config)
    assert type(cfg).from_json(cfg.to_json()) == cfg
    assert cfg.replace() == cfg


def test_nested_configs_come_back_as_their_own_class():
    cfg = SparseFeatureConfig(d=4, n_features=6, firing=Zipf(1.0, 0.01, 0.2))
    data = cfg.to_dict()
    assert data["firing"] == {"kind": "Zipf", "exponent": 1.0, "p_min": 0.01, "p_max": 0.2}
    assert "kind" not in data  # the caller names the top-level class
    assert SparseFeatureConfig.from_dict(data).firing == Zipf(1.0, 0.01, 0.2)
    assert SparseFeatureConfig.from_dict({"kind": "SparseFeatureConfig", **data}) == cfg  # older files


def test_bad_data_is_refused_naming_the_problem():
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields: \['stpes'\]"):
        TrainConfig.from_dict({"stpes": 3})
    with pytest.raises(ValueError, match="describes a 'SAEConfig', not a TrainConfig"):
        TrainConfig.from_dict({"kind": "SAEConfig", "steps": 3})
    with pytest.raises(TypeError, match="data must be a dict of TrainConfig fields, got list"):
        TrainConfig.from_dict([3])
    with pytest.raises(ValueError, match="unknown config kind 'Nope'"):
        SparseFeatureConfig.from_dict({"d": 4, "n_features": 6, "firing": {"kind": "Nope"}})
    with pytest.raises(ValueError, match="steps"):  # values are validated as on construction
        TrainConfig.from_dict({"steps": 0})
    with pytest.raises(ValueError, match="k=9 exceeds d_sae=8"):
        SAEConfig("topk", 4, 8, k=2).replace(k=9)


@given(steps=st.integers(1, 10_000), lr=st.floats(1e-6, 1.0))
def test_replace_validates_like_the_constructor(steps, lr):
    cfg = TrainConfig(steps=1).replace(steps=steps, lr=lr)
    assert (cfg.steps, cfg.lr) == (steps, lr)
    with pytest.raises(ValueError, match="lr"):
        cfg.replace(lr=-lr)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: Constant(True), "Constant.p"),
        (lambda: SparseFeatureConfig(d=2.5, n_features=10), "d"),
        (lambda: SAEConfig("topk", 8, 16.0, k=4), "d_sae"),
        (lambda: TrainConfig(steps=2.5), "steps"),
        (lambda: TrainConfig(steps=3, lr="0.1"), "lr"),
        (lambda: ToyModelConfig(n_features=2.5), "n_features"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_type_error_naming_the_field(make, name):
    """The shared checks (groundtruth.checks) tell a wrong type (TypeError) from a wrong value (ValueError)."""
    with pytest.raises(TypeError, match=rf"^{name.replace('.', '[.]')} must be"):
        make()
