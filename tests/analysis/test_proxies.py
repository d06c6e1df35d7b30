"""Tests of analysis.metrics.proxies and analysis.experiments.proxies (SAEBench's k-sparse probing, SCR and TPP) against scipy's optimiser,
exhaustive subset search and hand-built codes whose answer is known."""

import itertools
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from scipy.stats import spearmanr

import analysis.experiments.proxies as proxies_experiment
from analysis.cli import main
from analysis.experiments.proxies import proxy_scores, proxy_summary, proxy_task, score_sweep
from analysis.figures.proxies import draw_proxies, proxies_vs_ground_truth
from analysis.metrics.proxies import (
    balanced_rows,
    fit_probe,
    scr,
    scr_probes,
    sparse_probing,
    top_k_mean_diff,
    tpp,
    tpp_probes,
)
from groundtruth import Constant, ConstantMagnitude, SparseFeatureConfig, SparseFeatureModel
from toymodels.sae import SAEConfig, make_sae, save_sae

FAST = settings(max_examples=15, deadline=None)
seeds = st.integers(0, 2**31 - 1)


def _scipy_probe(x: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    """The same L2 logistic regression, minimised by scipy's BFGS (an independent solver)."""
    s = 2 * y - 1
    design = np.hstack([x, np.ones((len(x), 1))])

    def f(theta):
        z = -s * (design @ theta)
        loss = 0.5 * theta[:-1] @ theta[:-1] + c * np.logaddexp(0, z).sum()
        p = 1 / (1 + np.exp(-z))
        grad = c * design.T @ (-s * p)
        grad[:-1] += theta[:-1]
        return loss, grad

    res = minimize(f, np.zeros(design.shape[1]), jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 10_000})
    return res.x


@FAST
@given(seed=seeds, n=st.integers(6, 40), d=st.integers(1, 4), c=st.sampled_from([0.1, 1.0, 10.0]))
def test_fit_probe_matches_scipy(seed, n, d, c):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.arange(n) % 2 == 0  # both classes, possibly separable
    x[y] += torch.randn(d, generator=g, dtype=torch.float64)
    probe = fit_probe(x, y, c=c)
    ref = _scipy_probe(x.numpy(), y.numpy().astype(float), c)
    np.testing.assert_allclose(probe.weight.numpy(), ref[:-1], rtol=1e-4, atol=1e-5)
    assert probe.bias == pytest.approx(ref[-1], rel=1e-4, abs=1e-5)
    direct = float(np.mean((x.numpy() @ ref[:-1] + ref[-1] > 0) == y.numpy()))
    assert probe.accuracy(x, y) == pytest.approx(direct, abs=1.5 / n)  # a row on the boundary may flip


@FAST
@given(seed=seeds, m=st.integers(1, 6), k=st.integers(1, 6), ties=st.booleans())
@example(seed=222, m=4, k=2, ties=True)  # near-ties in float once broke a reference with unequal class sizes
def test_top_k_mean_diff_is_the_plain_loop_order(seed, m, k, ties):
    """Against a loop over rows and Python's sort: the k latents of largest |class-mean difference|, best first,
    ties to the lower index. Codes on a grid of quarters make ties common, and two classes of 16 rows keep every
    mean exact in floating point, so a tie is a tie for both."""
    k = min(k, m)
    g = torch.Generator().manual_seed(seed)
    codes = torch.rand(32, m, generator=g, dtype=torch.float64)
    if ties:
        codes = (codes * 4).floor() / 4
    labels = torch.arange(32) % 2 == 0
    diff = []
    for j in range(m):
        on = [float(codes[i, j]) for i in range(32) if labels[i]]
        off = [float(codes[i, j]) for i in range(32) if not labels[i]]
        diff.append(abs(sum(on) / len(on) - sum(off) / len(off)))
    expected = sorted(range(m), key=lambda j: (-diff[j], j))[:k]
    assert top_k_mean_diff(codes, labels, k).tolist() == expected


def test_top_k_mean_diff_by_hand():
    codes = torch.tensor([[1.0, 0.0, 3.0, 2.0], [1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
    labels = torch.tensor([True, True, False, False])
    # differences: 1, 1, 2, 0 (latent 1 is -1: its size counts); the tie of 0 and 1 goes to 0
    assert top_k_mean_diff(codes, labels, 3).tolist() == [2, 0, 1]


@FAST
@given(seed=seeds, m=st.integers(2, 5), carrier=st.integers(0, 4))
def test_sparse_probing_agrees_with_exhaustive_search(seed, m, carrier):
    """One latent carries the label (plus noise below the margin), the others are noise independent of it:
    the best subset of each size by test accuracy, found exhaustively, scores what the mean-difference pick
    scores, and the pick holds the carrier."""
    carrier %= m
    g = torch.Generator().manual_seed(seed)

    def split(n):
        labels = torch.rand(n, generator=g) < 0.5
        codes = torch.rand(n, m, generator=g)
        codes[:, carrier] = 2.0 * labels + 0.9 * torch.rand(n, generator=g)
        return codes, labels

    (tr_c, tr_l), (te_c, te_l) = split(60), split(40)
    accuracy = sparse_probing(tr_c, tr_l, te_c, te_l, k_values=[1, 2])
    assert carrier in top_k_mean_diff(tr_c[balanced_rows(tr_l)], tr_l[balanced_rows(tr_l)], 1).tolist()
    tr, te = balanced_rows(tr_l), balanced_rows(te_l)
    for k in (1, 2):
        if k > m:
            continue
        best = max(
            fit_probe(tr_c[tr][:, list(s)], tr_l[tr]).accuracy(te_c[te][:, list(s)], te_l[te])
            for s in itertools.combinations(range(m), k)
        )
        assert accuracy[k] == best == 1.0


def test_balanced_rows_keeps_the_first_rows_of_each_class():
    labels = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)
    assert balanced_rows(labels).tolist() == [0, 1, 2, 4]


def _quadrants(reps: int):
    """Every (A, B) pair ``reps`` times, as ±1 signs: A on e1, B on e2."""
    signs = torch.tensor(list(itertools.product([1.0, -1.0], repeat=2))).repeat(reps, 1)
    return signs, signs > 0


def test_scr_recovers_everything_when_a_latent_is_the_spurious_feature():
    signs, labels = _quadrants(10)
    x, codes, w_dec = signs.clone(), signs.clone(), torch.eye(2)
    result = scr(x, codes, labels, x, codes, labels, w_dec, n_values=[1, 2])
    # the biased probe (trained where A = B) scores 3/4 on A: it is right wherever A = B and guesses a
    # constant on the other half; its oracle scores 1; with B's latent gone it reads A alone: 1
    assert result.biased_accuracy == (0.75, 0.75)
    assert result.oracle_accuracy == (1.0, 1.0)
    assert result.score == {1: 1.0, 2: 1.0}  # the second latent has no effect on B: never ablated
    assert result.dir2 == {1: 1.0, 2: 1.0}
    assert result.direction == 1  # a tie takes the first direction


def test_scr_of_a_dictionary_that_mixes_the_features():
    """Latents along e1 ± e2 (exact in floating point): ablating both leaves nothing, the biased probe guesses a
    constant (accuracy 1/2), and SCR is (1/2 - 3/4) / (1 - 3/4) = -1."""
    signs, labels = _quadrants(10)
    w_dec = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    codes = signs @ w_dec.T / 2
    result = scr(signs, codes, labels, signs, codes, labels, w_dec, n_values=[2])
    assert result.score[2] == pytest.approx(-1.0)


def test_scr_is_zero_when_the_biased_probe_loses_nothing():
    """B is a copy of A in every row the probe sees, so the biased probe is as good as the oracle: SAEBench
    scores 0 rather than divide by a gap under 0.001."""
    signs, labels = _quadrants(10)
    x = torch.cat([signs[:, :1], signs[:, :1]], dim=1)  # the activations carry A twice and no B
    result = scr(x, signs, labels, x, signs, labels, torch.eye(2), n_values=[1])
    assert result.oracle_accuracy[0] == result.biased_accuracy[0] == 1.0
    assert result.dir1 == {1: 0.0}


def test_tpp_of_one_latent_per_class():
    """Three independent classes, one latent each: ablating class i's latent sends probe i to a constant guess
    (accuracy 1/2) and leaves the others at 1: TPP = 1/2 - 0."""
    signs = torch.tensor(list(itertools.product([1.0, -1.0], repeat=3))).repeat(5, 1)
    labels = signs > 0
    result = tpp(signs, signs, labels, signs, signs, labels, torch.eye(3), n_values=[1, 3])
    assert result.intended == {1: 0.5, 3: 0.5}  # other latents have no effect on class i: never ablated
    assert result.unintended[1] == pytest.approx(0.0, abs=1e-12)
    assert result.score[1] == pytest.approx(0.5)


def test_tpp_of_a_dictionary_that_entangles_two_classes():
    """Classes 0 and 1 share the latents along e1 ± e2: the one class 0 or 1 ablates takes half of the other's
    signal too (both probes fall to 3/4: drops 1/4 and 1/4), while class 2 has its own latent (drops 1/2 and 0).
    Unintended (1/4 + 0)/2 for classes 0 and 1, 0 for class 2: TPP = ((1/4 - 1/8) * 2 + 1/2) / 3 = 1/4."""
    signs = torch.tensor(list(itertools.product([1.0, -1.0], repeat=3))).repeat(5, 1)
    labels = signs > 0
    w_dec = torch.tensor([[1.0, 1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    codes = torch.stack([(signs[:, 0] + signs[:, 1]) / 2, (signs[:, 0] - signs[:, 1]) / 2, signs[:, 2]], dim=1)
    result = tpp(signs, codes, labels, signs, codes, labels, w_dec, n_values=[1])
    assert result.intended[1] == pytest.approx((0.25 + 0.25 + 0.5) / 3)
    assert result.unintended[1] == pytest.approx((0.125 + 0.125 + 0) / 3)
    assert result.score[1] == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fit_probe(torch.ones(4, 2), torch.tensor([0, 1, 2, 1])), "labels must hold binary"),
        (lambda: fit_probe(torch.ones(4, 2), torch.ones(3, dtype=torch.bool)), r"labels must have shape \(4,\)"),
        (lambda: fit_probe(torch.ones(4, 2), torch.ones(4, dtype=torch.bool), c=0.0), "c must lie in"),
        (lambda: top_k_mean_diff(torch.ones(4, 2), torch.tensor([1, 0, 1, 0]), 3), "k must be an integer in"),
        (lambda: top_k_mean_diff(torch.ones(4, 2), torch.ones(4, dtype=torch.bool), 1), "both classes"),
        (lambda: balanced_rows(torch.zeros(4, dtype=torch.bool)), "labels must hold both classes"),
        (
            lambda: sparse_probing(torch.ones(4, 2), torch.tensor([1, 0, 1, 0]), torch.ones(4, 3), torch.ones(4), [1]),
            r"test_codes must have shape \[n, 2\]",
        ),
        (
            lambda: sparse_probing(torch.ones(4, 2), torch.tensor([1, 0, 1, 0]), torch.ones(4, 2), torch.ones(4), []),
            "k_values must be a non-empty",
        ),
        (
            lambda: fit_probe(torch.tensor([[float("nan")], [0.0]]), torch.tensor([1, 0])),
            "x contains a non-finite value",
        ),
        (
            lambda: scr(*([torch.ones(4, 2), torch.ones(4, 2), torch.tensor([[1, 1]] * 4)] * 2), torch.eye(2), [1]),
            "SCR needs rows in all four cells",
        ),
        (
            lambda: scr(*([torch.ones(4, 2), torch.ones(4, 3), torch.ones(4, 2)] * 2), torch.eye(2)),
            r"train_codes must have shape \[4, 2\]",
        ),
        (
            lambda: tpp(*([torch.ones(4, 2), torch.ones(4, 2), torch.ones(4, 1)] * 2), torch.eye(2)),
            "train_labels must have two or more classes",
        ),
        (
            lambda: tpp(*([torch.ones(4, 2), torch.ones(4, 2), torch.ones(4, 2)] * 2), torch.eye(2), n_values=[1]),
            "train_labels\\[:, 0\\] must hold both classes",
        ),
        (
            lambda: tpp(*([torch.ones(4, 2), torch.ones(4, 2), torch.eye(4)[:, :2]] * 2), torch.eye(2), n_values=[3]),
            r"n_values\[0\] must be an integer in \[1, 2\]",
        ),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_set_sizes_are_capped_like_saebench():
    labels = torch.arange(20) % 4 == 0  # 5 positives
    assert balanced_rows(labels, max_rows=6).tolist() == [0, 1, 2, 3, 4, 8]
    with pytest.raises(ValueError, match="max_rows must be an integer"):
        balanced_rows(labels, max_rows=1)


@FAST
@given(seed=seeds)
def test_probes_fitted_once_give_the_same_scores(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(200, 4, generator=g)
    labels = x[:, :3] + 0.5 * torch.randn(200, 3, generator=g) > 0
    w_dec = torch.randn(6, 4, generator=g)
    codes = torch.relu(x @ w_dec.T)
    args = (x[:120], codes[:120], labels[:120, :2], x[120:], codes[120:], labels[120:, :2], w_dec, [1, 3])
    assert scr(*args, max_train=80) == scr(*args, max_train=80, probes=scr_probes(x[:120], labels[:120, :2], 80))
    args = (x[:120], codes[:120], labels[:120], x[120:], codes[120:], labels[120:], w_dec, [1, 3])
    assert tpp(*args) == tpp(*args, probes=tpp_probes(x[:120], labels[:120]))


class _Dictionary:
    """A fixed linear dictionary: codes ``x @ W_dec.T`` (exact for orthonormal rows)."""

    def __init__(self, w_dec: torch.Tensor) -> None:
        self.W_dec = w_dec

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W_dec.T


def test_proxies_rank_the_true_dictionary_above_a_rotated_one():
    """Twelve independent binary features on the axes: the true dictionary has one latent per label (top-1
    probing accuracy 1, and ablating class i's latent sends probe i to a constant guess while sparing the
    others: TPP near 1/2); a random rotation reconstructs as well but spreads every feature over all latents."""
    config = SparseFeatureConfig(d=12, n_features=12, firing=Constant(0.2), magnitude=ConstantMagnitude(1.0))
    model = SparseFeatureModel(config, directions=torch.eye(12))
    task = proxy_task(model, n_train=3000, n_test=2000, n_probing=6, n_pairs=2, n_classes=4)
    assert len(set(task.tpp_classes)) == 4 and len({f for p in task.scr_pairs for f in p}) == 4
    true = proxy_scores(_Dictionary(torch.eye(12)), task, n_values=[1, 2])
    rotation = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(0))).Q
    rotated = proxy_scores(_Dictionary(rotation), task, n_values=[1, 2])
    assert true["sparse_probing_top_1"] == true["probed_feature_f1"] == 1.0
    assert rotated["probed_feature_f1"] < 0.9
    assert rotated["sparse_probing_top_1"] < 0.9
    assert true["tpp_top_1"] == pytest.approx(0.5, abs=0.05)
    assert rotated["tpp_top_1"] < true["tpp_top_1"] - 0.1


def test_proxy_summary_by_hand():
    table = pd.DataFrame(
        {
            "sae": ["a", "a", "b", "b"],
            "target_l0": [8.0] * 4,
            "seed": [0, 1, 0, 1],
            "f1": [0.1, 0.2, 0.5, 0.6],
            "mcc": [0.6, 0.5, 0.2, 0.1],
            "p": [1.0, 2.0, 3.0, 4.0],
        }
    )
    summary = proxy_summary(table, ["p"]).set_index("metric")
    assert summary.loc["p", "spearman_f1"] == pytest.approx(1.0)
    assert summary.loc["p", "spearman_mcc"] == pytest.approx(-1.0)
    half = np.sqrt(0.5)  # the std (ddof 1) of two values 1 apart
    assert summary.loc["p", "cv_over_seeds"] == pytest.approx((half / 1.5 + half / 3.5) / 2)
    assert summary.loc["p", "seed_std_over_config_std"] == pytest.approx(half / np.std([1.5, 3.5], ddof=1))
    with pytest.raises(ValueError, match=r"lacks the columns \['scr_top_20'\]"):  # SAEs under 20 latents wide
        proxy_summary(table, ["p", "scr_top_20"])


def _table(n_per=3):
    g = np.random.default_rng(0)
    rows = []
    for sae, l0 in itertools.product(["a", "b"], [8.0, 16.0]):
        for seed in range(n_per):
            f1 = g.random()
            rows.append({"id": f"{sae}{l0}{seed}", "sae": sae, "target_l0": l0, "seed": seed, "f1": f1, "mcc": f1 / 2})
            rows[-1] |= {p: g.random() for p in ("sparse_probing_top_1", "scr_top_20", "tpp_top_20")}
    return pd.DataFrame(rows)


def test_figure_has_one_panel_per_ground_truth_and_proxy_with_spearman_titles(tmp_path):
    table = _table()
    fig = proxies_vs_ground_truth(table)
    axes = np.array(fig.axes).reshape(2, 3)
    rho = spearmanr(table["mcc"], table["tpp_top_20"]).statistic
    assert axes[1, 2].get_title() == f"Spearman ρ = {rho:.2f}"
    assert sum(len(c.get_offsets()) for c in axes[0, 0].collections) == len(table)
    plt.close(fig)
    table.to_csv(tmp_path / "proxies.csv", index=False)
    paths = draw_proxies(tmp_path)
    assert sorted(p.name for p in paths) == ["proxies.pdf", "proxies.png"] and all(p.stat().st_size for p in paths)


@pytest.mark.parametrize("knob", ["nan", "absent"])
def test_figure_draws_every_sae_of_a_sweep_without_a_target_l0(knob):
    """A sweep that sets k or a coefficient has no target L0 (NaN in proxies.csv, or no column): one point per
    SAE all the same."""
    table = _table()
    table = table.assign(target_l0=np.nan) if knob == "nan" else table.drop(columns="target_l0")
    fig = proxies_vs_ground_truth(table)
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == len(table)
    plt.close(fig)


def test_sweep_proxies_on_a_folder_that_is_no_sweep_is_an_argument_error(tmp_path, capsys):
    assert main(["sweep", "proxies", str(tmp_path)]) == 2
    assert "is not a sweep output folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="has no proxies.csv"):
        draw_proxies(tmp_path)


def test_score_sweep_reads_the_saved_saes_and_writes_the_table(tmp_path, monkeypatch):
    """A sweep folder of two saved SAEs on a sparse model of twelve axis-aligned binary features: one SAE is
    the true dictionary (identity weights, so its codes are the features), one is a fresh random one."""
    sparse = SparseFeatureConfig(d=12, n_features=12, firing=Constant(0.2), magnitude=ConstantMagnitude(1.0))
    true = make_sae(SAEConfig(architecture="standard", d_in=12, d_sae=12))
    with torch.no_grad():
        for name in ("W_enc", "W_dec"):
            getattr(true, name).copy_(torch.eye(12))
        true.b_enc.zero_()
        true.b_dec.zero_()
    saes = {"true": true, "random": make_sae(SAEConfig(architecture="standard", d_in=12, d_sae=12, seed=1))}
    for i, (name, sae) in enumerate(saes.items()):
        folder = tmp_path / "runs" / f"run{i}"
        save_sae(sae, folder / "sae")
        record = {
            "id": f"run{i}",
            "columns": {"sae": name, "target_l0": 2.0, "seed": 0},
            "config": {"source": {"sparse": sparse.to_dict()}},
            "metrics": {"l0": 2.0, "f1": 1.0 - i, "mcc": 1.0 - i},
        }
        (folder / "run.json").write_text(json.dumps(record))
    directions = torch.eye(12)  # the config's own directions are random; the saved SAEs assume the axes
    monkeypatch.setattr(
        proxies_experiment, "SparseFeatureModel", lambda c: SparseFeatureModel(c, directions=directions)
    )
    table = score_sweep(tmp_path, n_train=3000, n_test=2000, n_probing=6, n_pairs=2, n_classes=4)
    saved = pd.read_csv(tmp_path / "proxies.csv")
    pd.testing.assert_frame_equal(saved, table, check_dtype=False)
    assert sorted(zip(saved["id"], saved["sae"], strict=True)) == [("run0", "true"), ("run1", "random")]
    assert {"f1", "mcc", "sparse_probing_top_1", "scr_top_2", "tpp_top_10", "probed_feature_f1"} <= set(saved)
    by_sae = saved.set_index("sae")
    assert by_sae.loc["true", "sparse_probing_top_1"] == by_sae.loc["true", "probed_feature_f1"] == 1.0
    assert by_sae.loc["random", "probed_feature_f1"] < 1.0
