"""Tests of the toy model of superposition (Elhage et al. 2022) against independent references."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from groundtruth.latents import ActivationBatch, SparseCodes
from toymodels.superposition import (
    ToyModel,
    ToyModelConfig,
    dimensions_per_feature,
    feature_dimensionality,
    importances,
    sample_features,
    toy_activations,
    train_toy_model,
)


def _model_with_W(W: torch.Tensor, b: torch.Tensor | None = None) -> ToyModel:
    """A ToyModel whose parameters are set to the given ``W [m, F]`` (and ``b [F]``)."""
    m, F = W.shape
    model = ToyModel(ToyModelConfig(n_features=F, d_hidden=m))
    with torch.no_grad():
        model.W.copy_(W)
        if b is not None:
            model.b.copy_(b)
    return model


# ---------------------------------------------------------------------------------------------
# Config


def test_config_defaults_and_json_round_trip():
    cfg = ToyModelConfig(n_features=7, d_hidden=3, feature_probability=0.25, importance_decay=0.8, seed=11)
    text = json.dumps(cfg.to_dict())
    back = ToyModelConfig.from_dict(json.loads(text))
    assert back == cfg
    assert isinstance(hash(cfg), int)  # frozen
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]


def test_from_dict_rejects_unknown_keys():
    data = ToyModelConfig().to_dict() | {"n_feature": 3}
    with pytest.raises(ValueError, match="n_feature"):
        ToyModelConfig.from_dict(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_features", 0),
        ("n_features", -3),
        ("d_hidden", 0),
        ("steps", 0),
        ("batch_size", 0),
        ("seed", -1),
        ("seed", 2**64),
        ("feature_probability", 0.0),
        ("feature_probability", -0.1),
        ("feature_probability", 1.0000001),
        ("feature_probability", math.nan),
        ("feature_probability", math.inf),
        ("importance_decay", 0.0),
        ("importance_decay", 1.5),
        ("importance_decay", math.nan),
        ("lr", 0.0),
        ("lr", -1e-3),
        ("lr", math.nan),
        ("lr", math.inf),
        ("weight_decay", -0.1),
        ("weight_decay", math.nan),
    ],
)
def test_bad_config_raises_value_error_naming_field(field, value):
    with pytest.raises(ValueError, match=field) as info:
        ToyModelConfig(**{field: value})
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_features", 2.5), ("d_hidden", True), ("steps", "10"), ("lr", "0.1"), ("seed", None)],
)
def test_wrong_type_config_raises_type_error_naming_field(field, value):
    with pytest.raises(TypeError, match=field):
        ToyModelConfig(**{field: value})


def test_importances_closed_form():
    cfg = ToyModelConfig(n_features=6, importance_decay=0.7)
    expected = torch.tensor([0.7**i for i in range(6)], dtype=torch.float32)
    torch.testing.assert_close(importances(cfg), expected)
    assert torch.equal(importances(ToyModelConfig(importance_decay=1.0)), torch.ones(5))


# ---------------------------------------------------------------------------------------------
# Model


def test_init_is_xavier_normal_zero_bias_and_seeded():
    cfg = ToyModelConfig(n_features=400, d_hidden=100, seed=5)
    model = ToyModel(cfg)
    assert model.W.shape == (100, 400) and model.b.shape == (400,)
    assert torch.equal(model.b.detach(), torch.zeros(400))
    # xavier normal: std = sqrt(2 / (fan_in + fan_out)) = sqrt(2 / 500); 40k samples.
    std = model.W.detach().std().item()
    assert abs(std - math.sqrt(2 / 500)) < 0.02 * math.sqrt(2 / 500)
    assert torch.equal(ToyModel(cfg).W, model.W)
    assert not torch.equal(ToyModel(ToyModelConfig(n_features=400, d_hidden=100, seed=6)).W, model.W)


def test_forward_matches_manual_computation():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 7, generator=g)
    b = torch.randn(7, generator=g)
    model = _model_with_W(W, b)
    x = torch.rand(11, 7, generator=g)

    Wn, bn, xn = W.double().numpy(), b.double().numpy(), x.double().numpy()
    expected = np.zeros((11, 7))
    for s in range(11):
        h = np.array([sum(Wn[k, i] * xn[s, i] for i in range(7)) for k in range(3)])
        for j in range(7):
            pre = sum(h[k] * Wn[k, j] for k in range(3)) + bn[j]
            expected[s, j] = max(pre, 0.0)
    np.testing.assert_allclose(model(x).detach().double().numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.hidden(x).detach().double().numpy(), xn @ Wn.T, rtol=1e-5, atol=1e-5)
    # Works on arbitrary leading dimensions.
    assert model(x.reshape(1, 11, 7)).shape == (1, 11, 7)


def test_forward_rejects_wrong_shape():
    model = ToyModel(ToyModelConfig(n_features=5, d_hidden=2))
    with pytest.raises(ValueError, match="n_features"):
        model(torch.zeros(4, 6))
    with pytest.raises(TypeError, match="x"):
        model.hidden(np.zeros((4, 5)))


# ---------------------------------------------------------------------------------------------
# Data


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    n_features=st.integers(1, 20),
    p=st.floats(0.0, 1.0, exclude_min=True),
)
def test_sample_features_values_and_zero_rate(seed, n, n_features, p):
    cfg = ToyModelConfig(n_features=n_features, feature_probability=p, seed=seed)
    features = sample_features(n, cfg, torch.Generator().manual_seed(seed))
    assert features.shape == (n, n_features)
    assert features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert (features >= 0).all() and (features < 1).all()

    # A feature reads zero if inactive (prob 1 - p) or if its uniform draw is exactly 0.0
    # (float32 torch.rand: prob 2**-24). Binomial 5-sigma bound, +1 for discreteness.
    total = n * n_features
    q = (1 - p) + p * 2.0**-24
    zeros = int((features == 0).sum())
    assert abs(zeros - total * q) <= 5 * math.sqrt(total * q * (1 - q)) + 1


def test_sample_features_deterministic_and_mean():
    cfg = ToyModelConfig(n_features=8, feature_probability=0.3)
    a = sample_features(20_000, cfg, torch.Generator().manual_seed(1))
    b = sample_features(20_000, cfg, torch.Generator().manual_seed(1))
    c = sample_features(20_000, cfg, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Non-zero values are uniform on [0, 1): mean 1/2, variance 1/12.
    nz = a[a != 0]
    sigma = math.sqrt(1 / 12 / nz.numel())
    assert abs(nz.mean().item() - 0.5) < 5 * sigma
    assert sample_features(0, cfg, torch.Generator()).shape == (0, 8)
    with pytest.raises(ValueError, match="n"):
        sample_features(-1, cfg, torch.Generator())


# ---------------------------------------------------------------------------------------------
# Activation source


def test_toy_activations_closed_form_and_codes():
    cfg = ToyModelConfig(n_features=9, d_hidden=4, feature_probability=0.3, seed=3)
    model = ToyModel(cfg)
    batch = toy_activations(model, 500, torch.Generator().manual_seed(42))
    features = sample_features(500, cfg, torch.Generator().manual_seed(42))  # same stream

    assert isinstance(batch, ActivationBatch) and isinstance(batch.codes, SparseCodes)
    assert len(batch) == 500
    assert batch.x.shape == (500, 4) and batch.x.dtype == torch.float32
    assert batch.directions.shape == (9, 4)
    # Directions are W's columns, unnormalised, detached copies.
    assert torch.equal(batch.directions, model.W.detach().T)
    assert not batch.directions.requires_grad and not batch.x.requires_grad
    assert batch.directions.data_ptr() != model.W.data_ptr()

    # Codes are exactly the non-zero entries of the features, rows sorted then columns.
    codes = batch.codes
    assert codes.shape == (500, 9)
    assert codes.rows.dtype == torch.int64 and codes.cols.dtype == torch.int64
    assert codes.values.dtype == torch.float32
    assert torch.equal(codes.to_dense(), features)
    assert torch.equal(codes.active(), features != 0)
    assert (codes.values > 0).all()
    assert codes.rows.numel() == int((features != 0).sum())
    keys = codes.rows * 9 + codes.cols
    assert (keys[1:] > keys[:-1]).all()
    assert codes.l0() == pytest.approx((features != 0).sum(dim=1).double().mean().item())

    # The closed form: x = hidden(features) = codes @ directions, bit for bit.
    with torch.no_grad():
        assert torch.equal(batch.x, model.hidden(features))
        assert torch.equal(model.hidden(features), codes.to_dense() @ batch.directions)
    torch.testing.assert_close(batch.x.double(), features.double() @ model.W.detach().double().T, rtol=1e-6, atol=1e-6)

    # Later changes to the model do not leak into the batch.
    before = batch.directions.clone()
    with torch.no_grad():
        model.W.add_(1.0)
    assert torch.equal(batch.directions, before)


# ---------------------------------------------------------------------------------------------
# Geometry: closed forms


def test_orthonormal_columns_have_unit_dimensionality():
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0)))
    model = _model_with_W(q)
    assert dimensions_per_feature(model) == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(feature_dimensionality(model), torch.ones(6), atol=1e-5, rtol=0)


def test_antipodal_pair_has_half_dimensionality():
    w = 0.8
    model = _model_with_W(torch.tensor([[w, -w]]))
    torch.testing.assert_close(feature_dimensionality(model), torch.tensor([0.5, 0.5]))
    assert dimensions_per_feature(model) == pytest.approx(1 / (2 * w**2))

    # An antipodal pair on one axis and a dedicated feature on the other.
    W = torch.tensor([[1.3, -1.3, 0.0], [0.0, 0.0, 0.6]])
    torch.testing.assert_close(feature_dimensionality(_model_with_W(W)), torch.tensor([0.5, 0.5, 1]))


def test_zero_column_has_zero_dimensionality():
    W = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    model = _model_with_W(W)
    torch.testing.assert_close(feature_dimensionality(model), torch.tensor([1.0, 1.0, 0.0]))
    assert dimensions_per_feature(model) == pytest.approx(2 / 5)
    zero = _model_with_W(torch.zeros(2, 3))
    assert torch.equal(feature_dimensionality(zero), torch.zeros(3))
    assert dimensions_per_feature(zero) == math.inf


def test_pentagon_has_two_fifths_dimensionality():
    # Five unit vectors at 72 degrees: sum_j cos^2(theta_ij) = 5/2, so D_i = 2/5, D* = 2/5.
    angles = torch.arange(5, dtype=torch.float64) * 2 * math.pi / 5
    W = torch.stack([angles.cos(), angles.sin()]).float()
    model = _model_with_W(W)
    torch.testing.assert_close(feature_dimensionality(model), torch.full((5,), 0.4))
    assert dimensions_per_feature(model) == pytest.approx(0.4, rel=1e-6)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    m=st.integers(1, 8),
    F=st.integers(1, 12),
    log_scale=st.integers(-4, 4),
    zero_frac=st.sampled_from([0.0, 0.3]),
)
def test_feature_dimensionality_in_unit_interval(seed, m, F, log_scale, zero_frac):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, F, generator=g) * 10.0**log_scale
    W[:, torch.rand(F, generator=g) < zero_frac] = 0.0
    model = _model_with_W(W)
    dims = feature_dimensionality(model)
    assert dims.shape == (F,) and dims.dtype == torch.float32
    assert (dims >= 0).all() and (dims <= 1).all()
    assert torch.equal(dims == 0, (W == 0).all(dim=0))
    # Independent bound: D_i is the squared projection of e_i onto a line in the column space of
    # the Gram matrix, so sum_i D_i <= rank(W) <= m.
    assert dims.double().sum().item() <= torch.linalg.matrix_rank(W.double()).item() + 1e-5


# ---------------------------------------------------------------------------------------------
# Training


def test_same_seed_is_bit_identical_and_different_seeds_differ():
    cfg = ToyModelConfig(n_features=6, d_hidden=3, steps=25, batch_size=64, lr=1e-2, seed=7)
    a = train_toy_model(cfg, progress=False)
    b = train_toy_model(cfg, progress=False)
    c = train_toy_model(ToyModelConfig(**(cfg.to_dict() | {"seed": 8})), progress=False)
    assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b)
    assert not torch.equal(a.W, c.W) and not torch.equal(a.b, c.b)
    assert not torch.equal(a.W, ToyModel(cfg).W)  # training moved the weights


def test_training_logs_and_progress_can_be_turned_off(caplog, capsys):
    cfg = ToyModelConfig(steps=5, batch_size=16)
    with caplog.at_level(logging.INFO, logger="toymodels.superposition"):
        train_toy_model(cfg, progress=False)
    assert any(r.name == "toymodels.superposition" for r in caplog.records)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_training_lowers_importance_weighted_loss():
    cfg = ToyModelConfig(feature_probability=0.2, steps=150, batch_size=256, lr=1e-2, seed=1)
    x = sample_features(4096, cfg, torch.Generator().manual_seed(123))
    weights = torch.tensor([0.9**i for i in range(5)])

    def loss(model: ToyModel) -> float:
        with torch.no_grad():
            return (((x - model(x)) ** 2) * weights).sum(dim=1).mean().item()

    assert loss(train_toy_model(cfg, progress=False)) < 0.7 * loss(ToyModel(cfg))


@pytest.mark.parametrize("seed", [0, 1])
def test_dense_features_learn_only_m_features(seed):
    # Elhage et al.: with dense features the model represents the m most important features in
    # orthogonal directions and drops the rest.
    cfg = ToyModelConfig(
        n_features=5,
        d_hidden=2,
        feature_probability=1.0,
        importance_decay=0.9,
        steps=800,
        batch_size=256,
        lr=2e-2,
        seed=seed,
    )
    model = train_toy_model(cfg, progress=False)
    norms = model.W.detach().norm(dim=0)
    assert (norms[:2] > 0.9).all(), norms
    assert (norms[2:] < 0.4).all(), norms
    assert dimensions_per_feature(model) == pytest.approx(1.0, abs=0.15)
    dims = feature_dimensionality(model)
    assert (dims[:2] > 0.8).all() and (dims[2:] < 0.2).all(), dims


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_features_are_in_superposition(seed):
    # Elhage et al.: with sparse features the model packs more than m features into m dimensions
    # (here a pentagon: all five features, D_i ~ 2/5).
    cfg = ToyModelConfig(
        n_features=5,
        d_hidden=2,
        feature_probability=0.05,
        importance_decay=0.9,
        steps=400,
        batch_size=256,
        lr=1e-2,
        seed=seed,
    )
    model = train_toy_model(cfg, progress=False)
    norms = model.W.detach().norm(dim=0)
    assert int((norms > 0.5).sum()) > cfg.d_hidden, norms
    assert dimensions_per_feature(model) < 0.6
    assert (feature_dimensionality(model) < 0.75).all()
