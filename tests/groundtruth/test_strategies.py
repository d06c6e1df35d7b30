"""The public Hypothesis strategies draw valid objects and honour the strategies passed to them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from groundtruth import Hierarchy, SparseFeatureConfig, SparseFeatureModel
from groundtruth import strategies as gts
from groundtruth.directions import largest_overlap
from toymodels.sae import make_sae
from toymodels.sae.strategies import sae_configs


@settings(max_examples=25, deadline=None)
@given(cfg=gts.sparse_feature_configs())
def test_configs_build_and_sample(cfg):
    assert isinstance(cfg, SparseFeatureConfig)
    if cfg.hierarchy is not None:
        assert cfg.hierarchy.n_nodes <= cfg.n_features
    batch = SparseFeatureModel(cfg).sample(5, torch.Generator().manual_seed(0))
    assert batch.x.shape == (5, cfg.d) and torch.isfinite(batch.x).all()


@settings(max_examples=15, deadline=None)
@given(
    cfg=gts.sparse_feature_configs(d=st.just(3), n_features=st.integers(20, 25), hierarchy=st.none(), seed=st.just(7))
)
def test_config_fields_follow_the_given_strategies(cfg):
    assert cfg.d == 3 and 20 <= cfg.n_features <= 25 and cfg.hierarchy is None and cfg.seed == 7


@settings(max_examples=15, deadline=None)
@given(h=gts.hierarchies(max_nodes=12))
def test_hierarchies_fit(h):
    assert isinstance(h, Hierarchy) and h.n_nodes <= 12


@settings(max_examples=15, deadline=None)
@given(batch=gts.activation_batches(batch_size=st.integers(1, 8)))
def test_batches_carry_their_ground_truth(batch):
    n, d = batch.x.shape
    assert 1 <= n <= 8
    assert batch.codes.shape == (n, batch.directions.shape[0]) and batch.directions.shape[1] == d


@settings(max_examples=25, deadline=None)
@given(drawn=gts.dictionaries())
def test_dictionaries_respect_their_overlap(drawn):
    directions, overlap = drawn
    torch.testing.assert_close(directions.norm(dim=1), torch.ones(directions.shape[0]), atol=1e-5, rtol=0)
    assert largest_overlap(directions) <= overlap + 1e-5


@settings(max_examples=30, deadline=None)
@given(cfg=sae_configs())
def test_sae_configs_build_working_saes(cfg):
    sae = make_sae(cfg)
    codes = sae.encode(torch.randn(3, cfg.d_in))
    assert codes.shape == (3, cfg.d_sae)
    if cfg.architecture == "topk":
        assert int((codes != 0).sum(-1).max()) <= cfg.k


@settings(max_examples=10, deadline=None)
@given(cfg=sae_configs(architecture=st.just("matryoshka_batchtopk"), d_sae=st.integers(4, 12)))
def test_sae_configs_honour_the_architecture_strategy(cfg):
    assert cfg.architecture == "matryoshka_batchtopk" and cfg.matryoshka_prefixes[-1] == cfg.d_sae


@settings(max_examples=20, deadline=None)
@given(hmm=gts.processes())
def test_processes_are_valid_and_sample(hmm):
    np.testing.assert_allclose(hmm.T.sum(axis=(0, 2)), 1.0, atol=1e-9)
    assert (hmm.T >= 0).all() and hmm.initial.sum() == pytest.approx(1.0)
    batch = hmm.sample(3, 4, torch.Generator().manual_seed(0))
    assert batch.latents.shape == (3, 4, hmm.n_states)


@settings(max_examples=15, deadline=None)
@given(hmm=gts.hmms(n_states=st.just(3), n_tokens=st.just(2), unifilar=st.just(True)))
def test_hmms_follow_the_given_strategies(hmm):
    assert (hmm.n_states, hmm.n_tokens) == (3, 2) and hmm.is_unifilar()
