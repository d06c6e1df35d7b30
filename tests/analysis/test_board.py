"""Board metrics against brute force (plain loops over positions, features, properties and thresholds)
and hand-worked cases."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.metrics import board
from analysis.metrics.board import (
    THRESHOLDS,
    board_reconstruction,
    class_f1,
    classifier_counts,
    coverage,
    f1_scores,
    linear_probe,
    score_board,
    square_classes,
)
from analysis.metrics.splits import sequence_split
from groundtruth.strategies import seeds


def random_case(seed: int, n: int, m: int, k: int, density: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Features with ties, zeros and negative values, and labels with some never-occurring properties,
    tied to a few features so that precise latents exist."""
    rng = np.random.default_rng(seed)
    values = rng.integers(-2, 6, size=(n, m)).astype(np.float32)  # small integers: many exact ties
    features = np.where(rng.random((n, m)) < density, values, 0.0)
    labels = rng.random((n, k)) < 0.3
    labels[:, : min(k, m)] |= features[:, : min(k, m)] > 2  # property j follows feature j's high values
    labels[:, rng.random(k) < 0.2] = False  # properties that never occur
    return torch.from_numpy(features), torch.from_numpy(labels)


def brute_counts(features: np.ndarray, labels: np.ndarray, maxima: np.ndarray, thresholds) -> tuple:
    n, m = features.shape
    firings = np.zeros((len(thresholds), m))
    hits = np.zeros((len(thresholds), m, labels.shape[1]))
    for t, fraction in enumerate(thresholds):
        for j in range(m):
            if maxima[j] <= 0:
                continue
            for p in range(n):
                if features[p, j] > fraction * maxima[j]:
                    firings[t, j] += 1
                    hits[t, j] += labels[p]
    return firings, hits


def brute_f1(tp: float, fired: float, positives: float) -> float:
    precision = tp / fired if fired else 0.0
    recall = tp / positives if positives else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


CASES = st.tuples(seeds(), st.integers(1, 40), st.integers(1, 6), st.integers(1, 5), st.sampled_from([0.05, 0.5, 1.0]))


@settings(max_examples=30, deadline=None)
@given(CASES)
def test_counts_and_f1_equal_brute_force(case) -> None:
    features, labels = random_case(*case)
    counts = classifier_counts(features, labels)
    maxima = features.numpy().max(0)
    firings, hits = brute_counts(features.numpy(), labels.numpy(), maxima, THRESHOLDS)
    assert np.array_equal(counts.firings.numpy(), firings)
    assert np.array_equal(counts.true_positives.numpy(), hits)
    f1 = f1_scores(counts).numpy()
    positives = labels.numpy().sum(0)
    for t, j, k in np.ndindex(*f1.shape):
        assert f1[t, j, k] == pytest.approx(brute_f1(hits[t, j, k], firings[t, j], positives[k]), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(CASES)
def test_coverage_equals_its_definition(case) -> None:
    features, labels = random_case(*case)
    counts = classifier_counts(features, labels)
    occurring = labels.numpy().any(0)
    if not occurring.any():
        with pytest.raises(ValueError, match="occurs"):
            coverage(counts)
        return
    maxima = features.numpy().max(0)
    firings, hits = brute_counts(features.numpy(), labels.numpy(), maxima, THRESHOLDS)
    positives = labels.numpy().sum(0)
    per_threshold = []
    for t in range(len(THRESHOLDS)):
        best = [
            max(brute_f1(hits[t, j, k], firings[t, j], positives[k]) for j in range(features.shape[1]))
            for k in range(labels.shape[1])
        ]
        per_threshold.append(np.mean([b for b, occurs in zip(best, occurring, strict=True) if occurs]))
    result = coverage(counts)
    assert result.value == pytest.approx(max(per_threshold), abs=1e-12)
    assert result.per_threshold.numpy() == pytest.approx(per_threshold, abs=1e-12)
    assert np.isnan(result.best_f1.numpy()[~occurring]).all()


def brute_reconstruction(train_x, train_y, test_x, test_y, precision=0.95, min_firings=10) -> list[float]:
    maxima = train_x.max(0)
    out = []
    for fraction in THRESHOLDS:
        m, k = train_x.shape[1], train_y.shape[1]
        label_sets = []
        for j in range(m):
            active = train_x[:, j] > fraction * maxima[j] if maxima[j] > 0 else np.zeros(len(train_x), bool)
            fired = active.sum()
            label_sets.append(
                {
                    p
                    for p in range(k)
                    if fired >= min_firings
                    and Fraction(int(train_y[active, p].sum()), max(fired, 1)) >= Fraction(str(precision))
                }
            )
        tp = fp = fn = 0
        for row in range(len(test_x)):
            predicted = set()
            for j in range(m):
                if maxima[j] > 0 and test_x[row, j] > fraction * maxima[j]:
                    predicted |= label_sets[j]
            truth = set(np.flatnonzero(test_y[row]).tolist())
            tp, fp, fn = tp + len(predicted & truth), fp + len(predicted - truth), fn + len(truth - predicted)
        out.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"))
    return out


@settings(max_examples=20, deadline=None)
@given(CASES, CASES, st.sampled_from([(0.95, 10), (0.5, 1), (1.0, 3)]))
def test_reconstruction_equals_brute_force(train_case, test_case, rule) -> None:
    train_x, train_y = random_case(*train_case)
    test_x, test_y = random_case(*test_case)
    m, k = min(train_x.shape[1], test_x.shape[1]), min(train_y.shape[1], test_y.shape[1])
    train_x, train_y, test_x, test_y = train_x[:, :m], train_y[:, :k], test_x[:, :m], test_y[:, :k]
    result = board_reconstruction(train_x, train_y, test_x, test_y, precision=rule[0], min_firings=rule[1])
    expected = brute_reconstruction(train_x.numpy(), train_y.numpy(), test_x.numpy(), test_y.numpy(), *rule)
    assert np.allclose(result.per_threshold.numpy(), expected, atol=1e-12, equal_nan=True)
    train = brute_reconstruction(train_x.numpy(), train_y.numpy(), train_x.numpy(), train_y.numpy(), *rule)
    assert np.allclose(result.train_per_threshold.numpy(), train, atol=1e-12, equal_nan=True)
    best = int(np.nanargmax(np.where(np.isnan(train), -1, train)))
    assert result.threshold == THRESHOLDS[best]


def test_sparse_and_dense_paths_agree(monkeypatch) -> None:
    features, labels = random_case(0, 300, 20, 7, 0.3)
    sparse = classifier_counts(features, labels)
    monkeypatch.setattr(board, "_DENSE", -1.0)  # every chunk takes the dense path
    dense = classifier_counts(features, labels)
    assert torch.equal(sparse.firings, dense.firings) and torch.equal(sparse.true_positives, dense.true_positives)
    monkeypatch.setattr(board, "_CHUNK_ELEMENTS", 64)  # and many small chunks
    chunked = classifier_counts(features, labels)
    assert torch.equal(sparse.true_positives, chunked.true_positives)


def test_a_hand_worked_board() -> None:
    # Two squares, one "mine" property each; latent 0 tracks square 0 exactly, latent 1 fires on
    # square 1 half the time and once wrongly.
    labels = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1], [0, 0], [1, 1]], dtype=torch.bool)
    features = torch.tensor([[2.0, 0], [1.0, 0], [0, 3.0], [0, 0], [0, 1.0], [4.0, 0]])
    cov = coverage(classifier_counts(features, labels, thresholds=(0.0, 0.5)))
    # t = 0: latent 0 has F1 1 on square 0; latent 1 has TP 1, 2 firings, 3 positives: F1 0.4.
    # t = 0.5 (cuts 2.0 and 1.5): latent 0 fires on row 5 only (2 > 2 fails), F1 2/(1+3) = 0.5 on either
    # square; latent 1 fires on row 2 only, F1 0.5 on square 1.
    assert cov.per_threshold.tolist() == pytest.approx([(1.0 + 0.4) / 2, 0.5])
    assert cov.value == pytest.approx(0.7) and cov.threshold == 0.0
    assert cov.best_feature.tolist() == [0, 1]


def test_never_occurring_classes_leave_the_denominator() -> None:
    # The harness's flaw: an impossible class scored 0 caps coverage. Here it is simply not counted.
    labels = torch.tensor([[1, 0], [0, 0], [1, 0]], dtype=torch.bool)
    features = torch.tensor([[1.0], [0.0], [1.0]])
    assert coverage(classifier_counts(features, labels)).value == 1.0


def test_held_out_split_uses_the_training_maxima() -> None:
    train_x = torch.tensor([[4.0]] * 10 + [[0.0]] * 10)
    train_y = torch.tensor([[True]] * 10 + [[False]] * 10)
    test_x = torch.tensor([[1.0], [3.0], [0.0]])  # 1.0 is below 0.5 x the training max, 3.0 above
    result = board_reconstruction(
        train_x, train_y, test_x, torch.tensor([[True], [True], [False]]), thresholds=(0.0, 0.5)
    )
    assert result.per_threshold.tolist() == pytest.approx([1.0, 2 / 3])
    assert result.labelled.tolist() == [1, 1]


@pytest.mark.parametrize(("right", "labelled"), [(55, True), (54, False)])
def test_precision_is_compared_exactly(right: int, labelled: bool) -> None:
    # 55 of 100 firings is exactly precision 0.55, though 0.55 x 100 = 55.000000000000007 in floating point.
    train_x = torch.ones(100, 1)
    train_y = (torch.arange(100) < right)[:, None]
    result = board_reconstruction(train_x, train_y, train_x[:1], train_y[:1], thresholds=(0.0,), precision=0.55)
    assert result.labelled.tolist() == [int(labelled)]


def test_per_position_breakdown() -> None:
    train_x, train_y = random_case(1, 200, 6, 4, 0.5)
    test_x, test_y = random_case(2, 60, 6, 4, 0.5)
    positions = torch.arange(60) % 3
    result = board_reconstruction(train_x, train_y, test_x, test_y, min_firings=1, test_positions=positions)
    assert result.per_position.shape == (3,)
    pooled = brute_reconstruction(
        train_x.numpy(), train_y.numpy(), test_x[positions == 1].numpy(), test_y[positions == 1].numpy(), 0.95, 1
    )
    assert result.per_position[1].item() == pytest.approx(pooled[THRESHOLDS.index(result.threshold)], nan_ok=True)


@pytest.mark.parametrize(
    ("features", "labels", "kwargs", "match"),
    [
        (torch.zeros(3), torch.zeros(3, 1, dtype=torch.bool), {}, r"features must be 2-D, got shape \(3,\)"),
        (torch.zeros(3, 2), torch.zeros(3, 1), {}, "labels must be a 2-D bool"),
        (torch.zeros(3, 2), torch.zeros(4, 1, dtype=torch.bool), {}, "4 rows but the features have 3"),
        (torch.full((3, 2), torch.nan), torch.zeros(3, 1, dtype=torch.bool), {}, "NaN"),
        (torch.zeros(3, 2), torch.zeros(3, 1, dtype=torch.bool), {"thresholds": (0.5, 0.1)}, "thresholds"),
        (torch.zeros(3, 2), torch.zeros(3, 1, dtype=torch.bool), {"max_activation": torch.ones(3)}, "max_activation"),
    ],
)
def test_bad_inputs_are_named(features, labels, kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        classifier_counts(features, labels, **kwargs)


def test_score_board_finds_planted_features_and_splits_by_game() -> None:
    from games import get_game

    othello = get_game("othello")
    batch = othello.token_batch(othello.random_games(60, np.random.default_rng(0)))
    labels, names = batch.latents[:, :59], batch.names
    planted = labels.float() * torch.rand(labels.shape, generator=torch.Generator().manual_seed(0)).add(0.5)
    report = score_board(planted, labels, names, properties=("mine", "theirs", "empty"))
    assert report.coverage.value == 1.0
    # Only properties seen fewer than 10 times in the 30 training games (early corner discs) go unlabelled.
    assert report.reconstruction.f1 > 0.97
    assert len(report.names) == 192 and all(n.split("@")[0] in ("mine", "theirs", "empty") for n in report.names)
    assert "empty@D4" not in report.property_f1()  # a centre square is never empty: not scored
    assert report.reconstruction.per_position.shape == (59,)
    # The same numbers by hand from the documented split.
    held = sequence_split(60, 0.5, torch.Generator().manual_seed(0))
    keep = [i for i, n in enumerate(names) if n.split("@")[0] in ("mine", "theirs", "empty")]
    noise = torch.rand(60, 59, 32, generator=torch.Generator().manual_seed(1))
    report = score_board(noise, labels, names, properties=("mine", "theirs", "empty"))
    y = labels[..., keep]
    train_counts = classifier_counts(noise[~held].flatten(0, 1), y[~held].flatten(0, 1))
    expected = coverage(
        classifier_counts(noise[held].flatten(0, 1), y[held].flatten(0, 1), max_activation=train_counts.max_activation)
    )
    assert report.coverage.value == pytest.approx(expected.value)
    assert report.coverage.value < 0.6 and report.reconstruction.f1 < 0.3
    alone = score_board(noise, labels, names, properties=("mine", "theirs", "empty"), reconstruct=False)
    assert alone.reconstruction is None and alone.coverage.value == report.coverage.value


def test_square_classes_read_one_hot_boards() -> None:
    names = ("mine@A1", "mine@A2", "theirs@A1", "theirs@A2", "empty@A1", "empty@A2", "legal@A1")
    labels = torch.tensor([[1, 0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 0, 0, 0], [0] * 7], dtype=torch.bool)
    classes = square_classes(labels, names, ("mine", "theirs", "empty"))
    assert classes.tolist() == [[0, 2], [1, 1], [-1, -1]]
    with pytest.raises(ValueError, match="exactly one"):
        square_classes(labels | True, names, ("mine", "theirs", "empty"))
    with pytest.raises(ValueError, match="'flipped@A1'"):
        square_classes(labels, names, ("mine", "flipped"))


@settings(max_examples=30, deadline=None)
@given(seeds(), st.integers(1, 6), st.integers(1, 5), st.integers(2, 4))
def test_class_f1_equals_a_loop_over_cells(seed: int, n: int, squares: int, n_classes: int) -> None:
    g = torch.Generator().manual_seed(seed)
    predicted, true = torch.randint(0, n_classes, (2, n, squares), generator=g)
    scored = [c for c in range(n_classes) if torch.rand(1, generator=g) < 0.6]
    hits = claimed = present = 0
    for p, t in zip(predicted.flatten().tolist(), true.flatten().tolist(), strict=True):
        claimed += p in scored
        present += t in scored
        hits += p == t and t in scored
    expected = 2 * hits / (claimed + present) if claimed + present else None
    got = class_f1(predicted, true, scored)
    assert got == pytest.approx(expected) if expected is not None else np.isnan(got)


def test_class_f1_of_a_hand_worked_board() -> None:
    # classes 0 mine, 1 theirs, 2 empty; pieces scored: 3 predicted, 3 true, 2 right → F1 = 4 / 6
    predicted = torch.tensor([[0, 1, 2, 0]])
    true = torch.tensor([[0, 1, 0, 2]])
    assert class_f1(predicted, true, [0, 1]) == pytest.approx(2 / 3)
    assert class_f1(predicted, true, [0, 1, 2]) == pytest.approx(0.5)  # with every class: the accuracy
    with pytest.raises(ValueError, match="same shape"):
        class_f1(predicted, true[:, :2], [0])


def test_linear_probe_reads_a_planted_board_and_not_a_shuffled_one() -> None:
    g = torch.Generator().manual_seed(0)
    classes = torch.randint(0, 3, (2000, 4), generator=g)
    onehot = torch.nn.functional.one_hot(classes, 3).flatten(1).float()
    features = onehot @ torch.randn(12, 16, generator=g) + 0.1 * torch.randn(2000, 16, generator=g)
    probe = linear_probe(features[:1000], classes[:1000], features[1000:], classes[1000:], 3)
    assert probe.accuracy > 0.99 and probe.per_square.shape == (4,)
    # weight and bias act on raw features: predictions made from them give the same accuracy
    assert (probe.predict(features[1000:]) == classes[1000:]).double().mean() == pytest.approx(probe.accuracy)
    shifted = linear_probe(features[:1000] + 50, classes[:1000], features[1000:] + 50, classes[1000:], 3)
    assert (shifted.predict(features[1000:] + 50) == classes[1000:]).double().mean() > 0.99
    shuffled = classes[torch.randperm(2000, generator=g)]
    chance = linear_probe(features[:1000], shuffled[:1000], features[1000:], shuffled[1000:], 3)
    assert 0.25 < chance.accuracy < 0.42
    with pytest.raises(ValueError, match="train_classes"):
        linear_probe(features, classes + 5, features, classes, 3)


def test_readme_board_example_runs() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    code = readme.split("## Board metrics")[1].split("```python")[1].split("```")[0]
    scope: dict = {}
    exec(code, scope)
    report = scope["report"]
    assert round(report.coverage.value, 2) == 0.41 and round(report.reconstruction.f1, 2) == 0.0  # as printed there
