"""Board-state metrics: SAE latents (or neurons, or any features) as classifiers of board properties.

Karvonen et al. (2024), "Measuring Progress in Dictionary Learning for Language Model Interpretability
with Board Game Models", with the definitions pinned in DESIGN.md:

* A latent is *active* at threshold t when its activation exceeds t × its maximum activation (the
  maximum over the training split); t runs over :data:`THRESHOLDS` = 0, 0.1, …, 1.0 as in their code.
* **Coverage** = max over thresholds of the mean, over properties, of the best latent's F1 for that
  property. The mean runs only over properties that occur in the scored data: a class that never occurs
  (an empty centre square in Othello) has no F1 and is left out of the denominator, where their harness
  counted it as 0 and so capped Othello coverage at 2/3.
* **Board reconstruction**: on the training split, each latent is labelled with every property it
  predicts with precision ≥ 0.95 over at least 10 firings; on the held-out split the predicted board is
  the union of the labels of the active latents, scored by F1 over all (position, property) cells.
  Reported at the threshold with the best training F1 (chosen without the held-out split) and per threshold.

Counting is the whole cost: true positives for every (threshold, latent, property). Each activation is
put in the bucket of the highest threshold it exceeds, and one sparse product of the bucket indicators
with the labels counts every bucket at once; a reverse cumulative sum turns buckets into thresholds.
Dense features (MLP neurons) use one dense product per threshold instead.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from analysis.metrics.splits import sequence_split
from groundtruth.checks import check_int, check_real, check_tensor

__all__ = [
    "THRESHOLDS",
    "BoardReport",
    "ClassifierCounts",
    "Coverage",
    "Reconstruction",
    "board_reconstruction",
    "class_f1",
    "classifier_counts",
    "coverage",
    "f1_scores",
    "score_board",
    "square_classes",
    "linear_probe",
    "Probe",
]

THRESHOLDS: tuple[float, ...] = tuple(i / 10 for i in range(11))
_CHUNK_ELEMENTS = 1 << 24  # activations per chunk of positions
_DENSE = 1 / 16  # above this fraction of positive activations, dense products beat sparse ones


def _check_features(name: str, x: object) -> torch.Tensor:
    check_tensor(name, x, ndim=2)
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a 2-D float tensor [n, m], got {_describe(x)}")
    return x.detach()


def _check_labels(name: str, labels: object, n: int) -> torch.Tensor:
    check_tensor(name, labels, ndim=2)
    if labels.dtype != torch.bool:
        raise ValueError(f"{name} must be a 2-D bool tensor [n, K], got {_describe(labels)}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} rows but the features have {n}; they must match")
    return labels


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def _check_thresholds(thresholds: object) -> torch.Tensor:
    t = torch.as_tensor(thresholds, dtype=torch.float64)
    if t.ndim != 1 or not len(t) or bool((t < 0).any() | (t > 1).any()) or bool((t.diff() <= 0).any()):
        raise ValueError(f"thresholds must be increasing fractions in [0, 1], got {thresholds!r}")
    return t


@dataclass(frozen=True)
class ClassifierCounts:
    """Everything the metrics need, for ``T`` thresholds, ``m`` features and ``K`` properties.

    ``firings [T, m]``: positions where feature j is active at threshold t; ``true_positives [T, m, K]``:
    those where property k also holds; ``positives [K]``: positions where k holds; ``n``: positions.
    ``max_activation [m]`` and ``thresholds [T]`` define activity (``x > t × max``).
    """

    firings: torch.Tensor
    true_positives: torch.Tensor
    positives: torch.Tensor
    n: int
    max_activation: torch.Tensor
    thresholds: torch.Tensor


def _cuts(max_activation: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """``[T, m]`` activation levels to exceed; features that never fire (max ≤ 0) are never active."""
    cuts = thresholds[:, None] * max_activation.double()[None, :]
    return torch.where(max_activation[None, :] > 0, cuts, torch.inf).float()


def _entries(x: torch.Tensor, cuts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The activations above the lowest cut, row-major: rows, columns, and how many thresholds each
    exceeds (active at threshold t ⇔ bucket > t). One pass over ``x``; the rest touches only these."""
    rows, cols = (x > cuts[0]).nonzero(as_tuple=True)
    values = x[rows, cols]
    bucket = torch.ones(len(rows), dtype=torch.int64)
    for cut in cuts[1:]:
        bucket += values > cut[cols]
    return rows, cols, bucket


def _csr(rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A 0/1 float CSR matrix with ones at ``(rows, cols)``; ``rows`` must be sorted."""
    crow = torch.zeros(shape[0] + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(rows, minlength=shape[0]).cumsum(0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, torch.ones(len(rows)), shape, check_invariants=False)


def classifier_counts(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    thresholds: tuple[float, ...] = THRESHOLDS,
    max_activation: torch.Tensor | None = None,
) -> ClassifierCounts:
    """Count, for every threshold and feature, its firings and its hits on every property.

    ``features [n, m]``: activations per position (SAE codes, neurons, anything); ``labels [n, K]`` bool.
    ``max_activation [m]`` defaults to the maximum over ``features``; pass the training split's to score
    a held-out split with the same thresholds.
    """
    features = _check_features("features", features)
    labels = _check_labels("labels", labels, features.shape[0])
    t = _check_thresholds(thresholds)
    n, m = features.shape
    if max_activation is None:
        max_activation = features.max(0).values if n else torch.zeros(m)
    if max_activation.shape != (m,):
        raise ValueError(f"max_activation must have shape ({m},), got {tuple(max_activation.shape)}")
    cuts = _cuts(max_activation, t)
    n_t, k = len(t), labels.shape[1]
    # Dense chunks count per threshold; sparse chunks per bucket, summed over thresholds at the end.
    firings = torch.zeros(n_t, m, dtype=torch.float64)
    hits = torch.zeros(n_t, m, k, dtype=torch.float64)
    bucket_firings = torch.zeros(n_t * m, dtype=torch.float64)
    bucket_hits = torch.zeros(n_t * m, k, dtype=torch.float64)
    step = max(1, _CHUNK_ELEMENTS // max(1, m))
    for a in range(0, n, step):
        x, y = features[a : a + step].float(), labels[a : a + step].float()
        rows, cols, bucket = _entries(x, cuts)
        if len(rows) > _DENSE * x.numel():
            for i, cut in enumerate(cuts):
                active = (x > cut).float()
                firings[i] += active.sum(0).double()
                hits[i] += (active.T @ y).double()  # exact: float32 holds counts below 2^24 per chunk
        else:
            key = (bucket - 1) * m + cols  # a bucket-b activation counts at thresholds 0..b-1
            order = torch.argsort(key, stable=True)
            bucket_hits += (_csr(key[order], rows[order], (n_t * m, len(x))) @ y).double()
            bucket_firings += torch.bincount(key, minlength=n_t * m).double()
    firings += bucket_firings.reshape(n_t, m).flip(0).cumsum(0).flip(0)
    hits += bucket_hits.reshape(n_t, m, k).flip(0).cumsum(0).flip(0)
    positives = labels.sum(0, dtype=torch.int64).double()
    return ClassifierCounts(firings, hits, positives, n, max_activation.detach(), t)


def f1_scores(counts: ClassifierCounts) -> torch.Tensor:
    """``[T, m, K]`` F1 of "feature j active at threshold t" as a classifier of property k
    (2 TP / (firings + positives); 0 where both are 0)."""
    denominator = counts.firings[:, :, None] + counts.positives[None, None, :]
    return torch.where(denominator > 0, 2 * counts.true_positives / denominator.clamp(min=1), 0.0)


@dataclass(frozen=True)
class Coverage:
    """Coverage and what it is made of.

    ``value``: the pinned coverage; ``threshold``: where it is reached; ``per_threshold [T]``; ``best_f1
    [K]`` and ``best_feature [K]``: each property's best feature and its F1 at that threshold (NaN for
    properties that never occur); ``occurring [K]``: the properties in the mean.
    """

    value: float
    threshold: float
    per_threshold: torch.Tensor
    best_f1: torch.Tensor
    best_feature: torch.Tensor
    occurring: torch.Tensor


def coverage(counts: ClassifierCounts) -> Coverage:
    """Max over thresholds of the mean over occurring properties of the best feature's F1 (DESIGN.md)."""
    occurring = counts.positives > 0
    if not bool(occurring.any()):
        raise ValueError("coverage needs at least one property that occurs in the labels; none does")
    best_f1, best_feature = f1_scores(counts).max(1)  # [T, K]
    per_threshold = best_f1[:, occurring].mean(1)
    i = int(per_threshold.argmax())
    per_property = torch.where(occurring, best_f1[i], torch.nan)
    return Coverage(
        float(per_threshold[i]), float(counts.thresholds[i]), per_threshold, per_property, best_feature[i], occurring
    )


@dataclass(frozen=True)
class Reconstruction:
    """Board reconstruction F1 on the held-out split.

    ``f1``: at ``threshold``, the one with the best training F1; ``per_threshold [T]``: held-out F1 at
    each; ``train_per_threshold [T]``; ``labelled [T]``: features with at least one label; ``per_position``:
    held-out F1 per token position at ``threshold`` (when positions are given).
    """

    f1: float
    threshold: float
    per_threshold: torch.Tensor
    train_per_threshold: torch.Tensor
    labelled: torch.Tensor
    per_position: torch.Tensor | None = None


def _feature_labels(counts: ClassifierCounts, precision: float, min_firings: int) -> torch.Tensor:
    """``[T, m, K]``: the properties each feature predicts with the given precision and support."""
    enough = counts.firings >= min_firings
    # A ratio, not TP >= precision × firings: 55/100 rounds to the double 0.55, but 0.55 × 100 > 55.
    precise = counts.true_positives / counts.firings.clamp(min=1)[:, :, None] >= precision
    return precise & enough[:, :, None]


def _predicted_board(features: torch.Tensor, cuts: torch.Tensor, labels_of: torch.Tensor) -> torch.Tensor:
    """``[T, n, K]``: the union of the labels of the features active at each threshold."""
    out = torch.empty(len(cuts), features.shape[0], labels_of.shape[-1], dtype=torch.bool)
    step = max(1, _CHUNK_ELEMENTS // max(1, features.shape[1]))
    for a in range(0, len(features), step):
        x = features[a : a + step].float()
        rows, cols, bucket = _entries(x, cuts)
        dense = len(rows) > _DENSE * x.numel()
        for i, cut in enumerate(cuts):
            if dense:
                active = (x > cut).float()
            else:
                keep = bucket > i
                active = _csr(rows[keep], cols[keep], tuple(x.shape))
            out[i, a : a + step] = (active @ labels_of[i].float()) > 0
    return out


def _pooled_f1(predicted: torch.Tensor, labels: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    tp = (predicted & labels).sum(dims, dtype=torch.float64)
    total = predicted.sum(dims, dtype=torch.float64) + labels.sum(dims, dtype=torch.float64)
    return torch.where(total > 0, 2 * tp / total.clamp(min=1), torch.nan)


def board_reconstruction(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    thresholds: tuple[float, ...] = THRESHOLDS,
    precision: float = 0.95,
    min_firings: int = 10,
    test_positions: torch.Tensor | None = None,
    train_counts: ClassifierCounts | None = None,
) -> Reconstruction:
    """Label features on the training split, predict the held-out boards from them, score F1 (DESIGN.md).

    ``test_positions [n_test]`` (token positions, optional) adds a per-position breakdown.
    ``train_counts`` reuses counts already made from the training split.
    """
    check_real("precision", precision, 0.0, 1.0, low_open=True)
    check_int("min_firings", min_firings)
    test_features = _check_features("test_features", test_features)
    test_labels = _check_labels("test_labels", test_labels, test_features.shape[0])
    if train_counts is None:
        train_counts = classifier_counts(train_features, train_labels, thresholds=thresholds)
    else:
        train_features = _check_features("train_features", train_features)
    if test_features.shape[1] != train_counts.firings.shape[1] or test_labels.shape[1] != len(train_counts.positives):
        raise ValueError(
            f"test_features {tuple(test_features.shape)} and test_labels {tuple(test_labels.shape)} do not match "
            f"the training split's {train_counts.firings.shape[1]} features and {len(train_counts.positives)} properties"
        )
    cuts = _cuts(train_counts.max_activation, train_counts.thresholds)
    labels_of = _feature_labels(train_counts, precision, min_firings)
    train = _pooled_f1(_predicted_board(train_features, cuts, labels_of), train_labels[None], (1, 2))
    predicted = _predicted_board(test_features, cuts, labels_of)
    test = _pooled_f1(predicted, test_labels[None], (1, 2))
    i = int(torch.nan_to_num(train, nan=-1.0).argmax())
    per_position = None
    if test_positions is not None:
        if test_positions.shape != (len(test_features),):
            raise ValueError(
                f"test_positions must have shape ({len(test_features)},), got {tuple(test_positions.shape)}"
            )
        per_position = torch.stack(
            [
                _pooled_f1(predicted[i][test_positions == p], test_labels[test_positions == p], (0, 1))
                for p in range(int(test_positions.max()) + 1)
            ]
        )
    labelled = labels_of.any(-1).sum(-1)
    return Reconstruction(float(test[i]), float(train_counts.thresholds[i]), test, train, labelled, per_position)


def square_classes(labels: torch.Tensor, names: tuple[str, ...], classes: tuple[str, ...]) -> torch.Tensor:
    """``[..., S]`` int64 class per square from one-hot labels ``[..., K]`` named ``class@square``:
    e.g. ``classes=("mine", "theirs", "empty")`` gives 0/1/2 per Othello square. Every square must hold
    exactly one class where labels are present; rows with no label at all (padding) get -1."""
    columns = _class_columns(names, classes)
    onehot = labels[..., columns]  # [..., C, S]
    count = onehot.sum(-2)
    if bool(((count != 1) & (count != 0)).any()):
        raise ValueError(f"labels must hold exactly one of {classes} per square")
    return torch.where(count == 1, onehot.int().argmax(-2), -1)


def _class_columns(names: tuple[str, ...], classes: tuple[str, ...]) -> torch.Tensor:
    index = {name: i for i, name in enumerate(names)}
    squares = [name.split("@", 1)[1] for name in names if name.startswith(classes[0] + "@")]
    if not squares:
        raise ValueError(f"no label is named {classes[0]}@<square>; names start {names[:3]}")
    try:
        return torch.tensor([[index[f"{c}@{s}"] for s in squares] for c in classes])
    except KeyError as missing:
        raise ValueError(f"labels lack {missing.args[0]!r}: every class needs every square") from None


def class_f1(predicted: torch.Tensor, true: torch.Tensor, classes: list[int]) -> float:
    """Pooled F1 over the cells of ``classes`` of boards with one class per square (``[n, S]`` ints):
    a cell counts as predicted when the predicted class is one of ``classes``, and as hit when it is
    also the true one. Scores a probe's board the way board reconstruction scores an SAE's."""
    if predicted.shape != true.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and true {tuple(true.shape)} must have the same shape")
    scored = torch.as_tensor(classes, dtype=true.dtype)
    hit = (torch.isin(true, scored) & (predicted == true)).sum()
    total = torch.isin(predicted, scored).sum() + torch.isin(true, scored).sum()
    return float(2 * hit / total) if total else float("nan")


@dataclass(frozen=True)
class Probe:
    """A linear probe's held-out accuracy per square and overall; for one-hot classes the pooled F1 of
    the predicted board equals the accuracy, so it compares directly with board reconstruction F1.
    ``weight [S × C, d]`` and ``bias [S × C]`` act on raw features (the standardisation is folded in)."""

    accuracy: float
    per_square: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """``[n, S]``: the most likely class of every square for each row of ``features [n, d]``."""
        return _probe_classes(
            _check_features("features", features).float(), self.weight, self.bias, len(self.per_square)
        )


def _probe_classes(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n_squares: int) -> torch.Tensor:
    return (x @ weight.T + bias).reshape(len(x), n_squares, -1).argmax(-1)


def linear_probe(
    train_features: torch.Tensor,
    train_classes: torch.Tensor,
    test_features: torch.Tensor,
    test_classes: torch.Tensor,
    n_classes: int,
    *,
    steps: int = 100,
    weight_decay: float = 1e-4,
) -> Probe:
    """One multinomial logistic regression per square (Li et al. 2023; Nanda et al. 2023: mine/theirs/
    empty), fitted jointly by full-batch L-BFGS on standardised features; ``classes [n, S]`` in
    ``0..n_classes-1``. The baseline an SAE's board reconstruction is compared with."""
    train_features = _check_features("train_features", train_features).float()
    test_features = _check_features("test_features", test_features).float()
    check_int("n_classes", n_classes, 2)
    check_int("steps", steps)
    for name, c, x in (("train_classes", train_classes, train_features), ("test_classes", test_classes, test_features)):
        if (
            c.ndim != 2
            or c.shape[0] != len(x)
            or c.dtype != torch.int64
            or bool((c < 0).any() | (c >= n_classes).any())
        ):
            raise ValueError(
                f"{name} must be int64 [n, S] in 0..{n_classes - 1} with one row per feature row, got {_describe(c)}"
            )
    mean, std = train_features.mean(0), train_features.std(0).clamp(min=1e-6)
    x = (train_features - mean) / std
    n_squares = train_classes.shape[1]
    linear = torch.nn.Linear(x.shape[1], n_squares * n_classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = linear(x).reshape(len(x), n_squares, n_classes)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), train_classes.flatten())
        loss = loss + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        weight = linear.weight / std
        bias = linear.bias - weight @ mean
        correct = (_probe_classes(test_features, weight, bias, n_squares) == test_classes).double()
    return Probe(float(correct.mean()), correct.mean(0), weight, bias)


@dataclass(frozen=True)
class BoardReport:
    """Coverage and board reconstruction (None when skipped) of one set of features, on held-out games,
    with the names of the properties scored (:func:`score_board`)."""

    coverage: Coverage
    reconstruction: Reconstruction | None
    names: tuple[str, ...]

    def property_f1(self) -> dict[str, float]:
        """Best feature's F1 per occurring property, at the coverage threshold."""
        return {
            n: float(f) for n, f, o in zip(self.names, self.coverage.best_f1, self.coverage.occurring, strict=True) if o
        }


def score_board(
    features: torch.Tensor,
    labels: torch.Tensor,
    names: tuple[str, ...],
    *,
    properties: tuple[str, ...] | None = None,
    mask: torch.Tensor | None = None,
    test_fraction: float = 0.5,
    seed: int = 0,
    thresholds: tuple[float, ...] = THRESHOLDS,
    precision: float = 0.95,
    min_firings: int = 10,
    reconstruct: bool = True,
) -> BoardReport:
    """Score features ``[games, t, m]`` (an SAE's codes, neurons, a hook) against board labels
    ``[games, t, K]``: features are labelled on one part of the games and scored on the rest.

    ``properties`` keeps the labels whose name starts with one of them (``("mine", "theirs", "empty")``
    for the board; default: all); ``mask [games, t]`` the positions to score (default: positions with any
    label, which drops padding). Every token position is scored, with a per-position breakdown.
    ``thresholds``, ``precision`` and ``min_firings`` are those of :func:`board_reconstruction`;
    ``reconstruct=False`` skips it (the report's ``reconstruction`` is None), for coverage alone.
    """
    if features.ndim != 3 or labels.ndim != 3 or features.shape[:2] != labels.shape[:2]:
        raise ValueError(
            f"features [games, t, m] and labels [games, t, K] must agree on games and t, got "
            f"{tuple(features.shape)} and {tuple(labels.shape)}"
        )
    if len(names) != labels.shape[-1]:
        raise ValueError(f"names has {len(names)} entries but labels have {labels.shape[-1]} properties")
    keep = [i for i, n in enumerate(names) if properties is None or n.split("@", 1)[0] in properties]
    if not keep:
        raise ValueError(f"no label matches properties={properties!r}")
    labels, names = labels[..., keep], tuple(names[i] for i in keep)
    if mask is None:
        mask = labels.any(-1)
    held = sequence_split(len(features), test_fraction, torch.Generator().manual_seed(seed))[:, None]
    test, train = held & mask, ~held & mask
    positions = torch.arange(features.shape[1]).expand(features.shape[:2])
    counts = classifier_counts(features[train], labels[train], thresholds=thresholds)
    held_out = classifier_counts(
        features[test], labels[test], thresholds=thresholds, max_activation=counts.max_activation
    )
    if not reconstruct:
        return BoardReport(coverage(held_out), None, names)
    rec = board_reconstruction(
        features[train],
        labels[train],
        features[test],
        labels[test],
        train_counts=counts,
        test_positions=positions[test],
        precision=precision,
        min_firings=min_firings,
    )
    return BoardReport(coverage(held_out), rec, names)
