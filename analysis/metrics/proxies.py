"""SAEBench's proxy metrics (Karvonen et al. 2025, "SAEBench: A Comprehensive Benchmark for Sparse
Autoencoders", arXiv:2503.09532): k-sparse probing, spurious correlation removal (SCR) and targeted probe
perturbation (TPP), on plain tensors so that any dictionary can be scored and the proxies can be judged
against ground truth (Chanin 2026 found k-sparse probing tracks it and SCR and TPP do not).

The definitions follow SAEBench's ``evals/sparse_probing`` and ``evals/scr_and_tpp``:

* **k-sparse probing**: on the train split, rank latents by ``|mean(codes | label) - mean(codes | not label)|``
  and keep the top k; fit a logistic regression on those k codes; report its test accuracy.
* **SCR**: a probe trained where label A and a spurious label B always agree leans on B. Rank latents by
  ``|(mean(codes | B) - mean(codes | not B)) * (W_dec @ w_B)|`` (``w_B`` a probe for B alone), zero the top n in
  the activations (``x - codes[:, S] @ W_dec[S]``, the SAE's reconstruction with those latents ablated plus its
  error), and score ``(acc_ablated - acc_biased) / (acc_oracle - acc_biased)``: the share of the accuracy on A
  that the biased probe lost to B and got back (0 when the gap is below 0.001). The same with A and B swapped
  is the second direction; the reported one is the direction whose biased accuracy is lower (the concept the
  biased probe leans on is the one ablated); ties take the first.
* **TPP**: for each class i, rank latents by ``clamp(mean(codes | i) - mean(codes | not i), 0) * (W_dec @ w_i)``,
  ablate the top n, and score the drop of probe i's accuracy minus the mean drop of the other classes' probes;
  report the mean over classes.

Variants, named: every probe is the L2 logistic regression of SAEBench's sparse probing (sklearn's defaults,
``C = 1``, unpenalised intercept), fitted to its optimum by Newton's method; SAEBench trains the SCR/TPP probes
with AdamW (batch 16, 20 epochs, L1 1e-3) and keeps the epoch with the best test accuracy. Each label's data
is balanced by keeping the first ``q`` rows of each class (each quadrant for SCR), ``q`` the smallest count and
at most SAEBench's set sizes (4,000 train, 1,000 test rows), so rows must be exchangeable (i.i.d. samples are).
The probes depend on the activations alone: :func:`scr_probes` and :func:`tpp_probes` fit them once for all
the SAEs scored on one data set, as SAEBench does. The ablation ``x - codes[:, S] @ W_dec[S]`` equals SAEBench's
``decode(codes with S zeroed) + (x - decode(codes))`` for every SAE whose decoder is affine in its codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from groundtruth.checks import check_int, check_real, check_tensor

__all__ = [
    "DEFAULT_K_VALUES",
    "DEFAULT_N_VALUES",
    "DEFAULT_MAX_TEST",
    "DEFAULT_MAX_TRAIN",
    "LinearProbe",
    "ScrProbes",
    "ScrResult",
    "TppResult",
    "balanced_rows",
    "fit_probe",
    "scr",
    "scr_probes",
    "sparse_probing",
    "top_k_mean_diff",
    "tpp",
    "tpp_probes",
]

DEFAULT_K_VALUES = (1, 2, 5)
"""SAEBench's sparse-probing k values."""

DEFAULT_N_VALUES = (2, 5, 10, 20, 50, 100, 500)
"""SAEBench's SCR/TPP numbers of ablated latents."""

DEFAULT_MAX_TRAIN, DEFAULT_MAX_TEST = 4000, 1000
"""SAEBench's probe train and test set sizes (each balanced over classes, or over quadrants for SCR)."""

_MIN_GAP = 0.001  # SAEBench: an SCR direction whose oracle beats the biased probe by less scores 0


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _labels(name: str, labels: object, n: int, columns: int | None = None) -> torch.Tensor:
    """Binary labels as bool, ``[n]`` (or ``[n, columns]``): bools, or numbers that are all 0 or 1."""
    shape = (n,) if columns is None else (n, columns)
    t = check_tensor(name, labels, shape=shape)
    if t.dtype == torch.bool:
        return t
    if t.is_complex() or bool(((t != 0) & (t != 1)).any()):
        bad = t[(t != 0) & (t != 1)][0].item() if not t.is_complex() else t.flatten()[0].item()
        raise ValueError(f"{name} must hold binary labels (bool or 0/1), got the value {bad!r}")
    return t.bool()


def _rows(name: str, t: object, n: int | None = None, width: int | None = None) -> torch.Tensor:
    t = check_tensor(name, t, 2)
    if t.shape[0] == 0 or (n is not None and t.shape[0] != n) or (width is not None and t.shape[1] != width):
        want = f"[{n if n is not None else 'n'}, {width if width is not None else 'any'}] with n >= 1"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    return t.detach().float()


def _data(train_x, train_codes, test_x, test_codes, w_dec) -> tuple[torch.Tensor, ...]:
    """The checked activations ``[n, d]``, codes ``[n, m]`` of both splits and the decoder ``[m, d]``."""
    train_x = _rows("train_x", train_x)
    w_dec = _rows("W_dec", w_dec, width=train_x.shape[1])
    train_codes = _rows("train_codes", train_codes, n=train_x.shape[0], width=w_dec.shape[0])
    test_x = _rows("test_x", test_x, width=train_x.shape[1])
    test_codes = _rows("test_codes", test_codes, n=test_x.shape[0], width=w_dec.shape[0])
    return train_x, train_codes, test_x, test_codes, w_dec


def _counts(name: str, values: Sequence[int], maximum: int) -> tuple[int, ...]:
    if isinstance(values, int) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of integers, got {values!r}")
    return tuple(check_int(f"{name}[{i}]", v, 1, maximum) for i, v in enumerate(values))


def balanced_rows(labels: torch.Tensor, max_rows: int | None = None, name: str = "labels") -> torch.Tensor:
    """The first ``q`` rows of each class of a binary label, ``q`` the smaller class's count and at most
    ``max_rows / 2`` (SAEBench balances every probing set, of 4,000 train and 1,000 test rows). Raises when a
    class is absent: accuracy against one class means nothing."""
    labels = _labels(name, check_tensor(name, labels, 1), len(labels))
    pos, neg = labels.nonzero().squeeze(1), (~labels).nonzero().squeeze(1)
    q = min(len(pos), len(neg), _cap(max_rows, 2))
    if q == 0:
        raise ValueError(f"{name} must hold both classes, got {len(pos)} positive and {len(neg)} negative rows")
    return torch.cat([pos[:q], neg[:q]]).sort().values


def _cap(max_rows: int | None, parts: int) -> int | float:
    if max_rows is None:
        return float("inf")
    return check_int("max_rows", max_rows, parts) // parts


def _quadrant_rows(a: torch.Tensor, b: torch.Tensor, max_rows: int | None) -> torch.Tensor:
    """The first ``q`` rows of each of the four (A, B) cells, ``q`` the smallest cell's count and at most
    ``max_rows / 4`` (SAEBench's quadrant-balanced sets)."""
    cells = [((a == va) & (b == vb)).nonzero().squeeze(1) for va in (True, False) for vb in (True, False)]
    q = min(min(len(c) for c in cells), _cap(max_rows, 4))
    if q == 0:
        sizes = {f"A={int(va)},B={int(vb)}": 0 for va in (1, 0) for vb in (1, 0)}
        sizes.update({k: len(c) for k, c in zip(sizes, cells, strict=True)})
        raise ValueError(f"SCR needs rows in all four cells of labels (A, B), got counts {sizes}")
    return torch.cat([c[:q] for c in cells]).sort().values


# --------------------------------------------------------------------------------------------
# probes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearProbe:
    """A logistic-regression probe: ``label = x @ weight + bias > 0``."""

    weight: torch.Tensor
    bias: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() @ self.weight + self.bias

    def accuracy(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        """Fraction of rows whose prediction (logit > 0, as sklearn's ``predict``) equals the label."""
        return float(((self.logits(x) > 0) == labels).double().mean())


def _objective(z: torch.Tensor, s: torch.Tensor, w: torch.Tensor, c: float) -> torch.Tensor:
    return 0.5 * (w @ w) + c * torch.nn.functional.softplus(-s * z).sum()


def fit_probe(x: torch.Tensor, labels: torch.Tensor, *, c: float = 1.0, max_iter: int = 100) -> LinearProbe:
    """The L2-regularised logistic regression sklearn's ``LogisticRegression()`` fits (``C = c``, intercept not
    penalised), solved to its optimum by Newton's method with backtracking: deterministic, and exact where
    sklearn stops at its tolerance. Minimises ``|w|²/2 + c · Σ log(1 + exp(-s_i (x_i·w + b)))``, ``s = ±1``."""
    x = _rows("x", x).double()
    labels = _labels("labels", labels, x.shape[0])
    check_real("c", c, 0.0, low_open=True)
    check_int("max_iter", max_iter)
    n, d = x.shape
    s = labels.double() * 2 - 1
    design = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    theta = torch.zeros(d + 1, dtype=torch.float64)
    penalty = torch.ones(d + 1, dtype=torch.float64)
    penalty[-1] = 0.0
    loss = _objective(design @ theta, s, theta[:-1], c)
    for _ in range(max_iter):
        z = design @ theta
        p = torch.sigmoid(-s * z)  # the probability of the wrong label
        grad = penalty * theta - c * design.T @ (s * p)
        curvature = c * p * (1 - p)
        hess = design.T @ (design * curvature[:, None]) + torch.diag(penalty + 1e-12)
        step = torch.linalg.solve(hess, grad)
        decrease = float(grad @ step)
        if decrease < 1e-20 * max(1.0, float(loss)):
            break
        t = 1.0
        while True:  # Armijo backtracking: Newton steps overshoot on nearly separable data
            trial = theta - t * step
            trial_loss = _objective(design @ trial, s, trial[:-1], c)
            if trial_loss <= loss - 1e-4 * t * decrease or t < 1e-10:
                break
            t /= 2
        theta, loss = trial, trial_loss
    return LinearProbe(theta[:-1].clone(), float(theta[-1]))


# --------------------------------------------------------------------------------------------
# k-sparse probing
# --------------------------------------------------------------------------------------------


def top_k_mean_diff(codes: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """The k latents with the largest ``|mean(codes | label) - mean(codes | not label)|`` (SAEBench's
    ``get_top_k_mean_diff_mask``), best first; ties go to the lower index."""
    codes = _rows("codes", codes)
    labels = _labels("labels", labels, codes.shape[0])
    check_int("k", k, 1, codes.shape[1])
    if bool(labels.all()) or not bool(labels.any()):
        raise ValueError(f"labels must hold both classes, got {int(labels.sum())} of {len(labels)} positive")
    return torch.sort(_mean_diff(codes, labels).abs(), descending=True, stable=True).indices[:k]


def sparse_probing(
    train_codes: torch.Tensor,
    train_labels: torch.Tensor,
    test_codes: torch.Tensor,
    test_labels: torch.Tensor,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    *,
    max_train: int | None = DEFAULT_MAX_TRAIN,
    max_test: int | None = DEFAULT_MAX_TEST,
) -> dict[int, float]:
    """SAEBench's k-sparse probing of one binary label: for each k, the test accuracy of a logistic regression
    on the k latents :func:`top_k_mean_diff` picks on the train split. Both splits are class-balanced first
    (:func:`balanced_rows`, at most ``max_train`` and ``max_test`` rows). High accuracy at small k means one or a few latents carry the concept."""
    train_codes = _rows("train_codes", train_codes)
    test_codes = _rows("test_codes", test_codes, width=train_codes.shape[1])
    train_labels = _labels("train_labels", train_labels, train_codes.shape[0])
    test_labels = _labels("test_labels", test_labels, test_codes.shape[0])
    k_values = _counts("k_values", k_values, train_codes.shape[1])
    tr = balanced_rows(train_labels, max_train, "train_labels")
    te = balanced_rows(test_labels, max_test, "test_labels")
    train_codes, train_labels = train_codes[tr], train_labels[tr]
    test_codes, test_labels = test_codes[te], test_labels[te]
    order = top_k_mean_diff(train_codes, train_labels, max(k_values))
    accuracy = {}
    for k in k_values:
        chosen = order[:k]
        probe = fit_probe(train_codes[:, chosen], train_labels)
        accuracy[k] = probe.accuracy(test_codes[:, chosen], test_labels)
    return accuracy


# --------------------------------------------------------------------------------------------
# SCR and TPP
# --------------------------------------------------------------------------------------------


def _top_n(effects: torch.Tensor, n: int) -> torch.Tensor:
    """SAEBench's ``select_top_n_features``: the n largest effects among the non-zero ones (fewer if fewer)."""
    nonzero = int((effects != 0).sum())
    return torch.topk(effects, min(n, nonzero)).indices if nonzero else effects.new_zeros(0, dtype=torch.long)


def _ablated(x: torch.Tensor, codes: torch.Tensor, w_dec: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    return x - codes[:, latents] @ w_dec[latents]


def _mean_diff(codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return codes[labels].mean(0) - codes[~labels].mean(0)


@dataclass(frozen=True)
class ScrProbes:
    """SCR's probes, which depend on the activations alone (SAEBench trains them once per dataset): ``biased``
    on the rows where A = B, ``oracles`` for A and for B on the quadrant-balanced rows."""

    biased: LinearProbe
    oracles: tuple[LinearProbe, LinearProbe]


def scr_probes(
    train_x: torch.Tensor, train_labels: torch.Tensor, max_train: int | None = DEFAULT_MAX_TRAIN
) -> ScrProbes:
    """The probes :func:`scr` uses for these train activations and labels ``[:, 0]`` (A) and ``[:, 1]`` (B):
    fit them once and pass them to every SAE's :func:`scr`."""
    train_x = _rows("train_x", train_x)
    train_labels = _labels("train_labels", train_labels, train_x.shape[0], 2)
    rows = _quadrant_rows(*train_labels.T, max_train)
    x, labels = train_x[rows], train_labels[rows]
    agree = labels[:, 0] == labels[:, 1]
    return ScrProbes(fit_probe(x[agree], labels[agree, 0]), (fit_probe(x, labels[:, 0]), fit_probe(x, labels[:, 1])))


@dataclass(frozen=True)
class ScrResult:
    """SCR per number of ablated latents: ``score`` (the chosen direction), ``dir1`` (B ablated, accuracy on A),
    ``dir2`` (A ablated, accuracy on B); ``direction`` the chosen one; the accuracies it normalises by."""

    score: dict[int, float]
    dir1: dict[int, float]
    dir2: dict[int, float]
    direction: int
    biased_accuracy: tuple[float, float]  # the biased probe on A data, on B data
    oracle_accuracy: tuple[float, float]  # the probe for A on A data, for B on B data


def scr(
    train_x: torch.Tensor,
    train_codes: torch.Tensor,
    train_labels: torch.Tensor,
    test_x: torch.Tensor,
    test_codes: torch.Tensor,
    test_labels: torch.Tensor,
    W_dec: torch.Tensor,
    n_values: Sequence[int] = DEFAULT_N_VALUES,
    *,
    probes: ScrProbes | None = None,
    max_train: int | None = DEFAULT_MAX_TRAIN,
    max_test: int | None = DEFAULT_MAX_TEST,
) -> ScrResult:
    """SAEBench's spurious correlation removal for the labels ``[:, 0]`` (A, the concept) and ``[:, 1]`` (B, the
    spurious one) of activations ``x [n, d]`` with SAE codes ``[n, m]`` and decoder ``W_dec [m, d]``: how much of
    the accuracy a probe trained where A = B loses to B comes back when the latents most tied to B are ablated.
    Each split is balanced over the four (A, B) cells (at most ``max_train`` and ``max_test`` rows); ``probes``
    (from :func:`scr_probes` on the same train data) saves refitting them for every SAE."""
    train_x, train_codes, test_x, test_codes, W_dec = _data(train_x, train_codes, test_x, test_codes, W_dec)
    train_labels = _labels("train_labels", train_labels, train_x.shape[0], 2)
    test_labels = _labels("test_labels", test_labels, test_x.shape[0], 2)
    n_values = _counts("n_values", n_values, W_dec.shape[0])
    if probes is None:
        probes = scr_probes(train_x, train_labels, max_train)
    tr, te = _quadrant_rows(*train_labels.T, max_train), _quadrant_rows(*test_labels.T, max_test)
    train_codes, train_labels = train_codes[tr], train_labels[tr]
    test_x, test_codes, test_labels = test_x[te], test_codes[te], test_labels[te]
    biased, oracles = probes.biased, probes.oracles
    biased_acc = tuple(biased.accuracy(test_x, test_labels[:, c]) for c in (0, 1))
    oracle_acc = tuple(oracles[c].accuracy(test_x, test_labels[:, c]) for c in (0, 1))
    directions = []
    for evaluated, ablated in ((0, 1), (1, 0)):  # dir1: ablate B, accuracy on A; dir2: the other way
        effects = (_mean_diff(train_codes, train_labels[:, ablated]) * (W_dec.double() @ oracles[ablated].weight)).abs()
        gap = oracle_acc[evaluated] - biased_acc[evaluated]
        scores = {}
        for n in n_values:
            x = _ablated(test_x, test_codes, W_dec, _top_n(effects, n))
            changed = biased.accuracy(x, test_labels[:, evaluated])
            scores[n] = 0.0 if gap < _MIN_GAP else (changed - biased_acc[evaluated]) / gap
        directions.append(scores)
    direction = 1 if biased_acc[0] <= biased_acc[1] else 2
    return ScrResult(directions[direction - 1], directions[0], directions[1], direction, biased_acc, oracle_acc)


def _class_labels(name: str, labels: object, n: int) -> torch.Tensor:
    t = check_tensor(name, labels, 2)
    if t.shape[1] < 2:
        raise ValueError(f"{name} must have two or more classes (columns), got shape {tuple(t.shape)}")
    return _labels(name, t, n, t.shape[1])


def tpp_probes(
    train_x: torch.Tensor, train_labels: torch.Tensor, max_train: int | None = DEFAULT_MAX_TRAIN
) -> tuple[LinearProbe, ...]:
    """The probes :func:`tpp` uses, one per class (column of ``train_labels``), each on that class balanced:
    fit them once and pass them to every SAE's :func:`tpp`."""
    train_x = _rows("train_x", train_x)
    train_labels = _class_labels("train_labels", train_labels, train_x.shape[0])
    rows = [balanced_rows(train_labels[:, i], max_train, f"train_labels[:, {i}]") for i in range(train_labels.shape[1])]
    return tuple(fit_probe(train_x[r], train_labels[r, i]) for i, r in enumerate(rows))


@dataclass(frozen=True)
class TppResult:
    """TPP per number of ablated latents, means over classes: ``score`` = ``intended`` (the drop of the ablated
    class's own probe) minus ``unintended`` (the mean drop of the other classes' probes)."""

    score: dict[int, float]
    intended: dict[int, float]
    unintended: dict[int, float]


def tpp(
    train_x: torch.Tensor,
    train_codes: torch.Tensor,
    train_labels: torch.Tensor,
    test_x: torch.Tensor,
    test_codes: torch.Tensor,
    test_labels: torch.Tensor,
    W_dec: torch.Tensor,
    n_values: Sequence[int] = DEFAULT_N_VALUES,
    *,
    probes: Sequence[LinearProbe] | None = None,
    max_train: int | None = DEFAULT_MAX_TRAIN,
    max_test: int | None = DEFAULT_MAX_TEST,
) -> TppResult:
    """SAEBench's targeted probe perturbation for the classes ``labels[:, i]`` (binary, at least two) of
    activations ``x [n, d]`` with codes ``[n, m]`` and decoder ``W_dec [m, d]``: ablating the latents most tied to
    class i should hurt probe i and spare the others. Each class's data is that class balanced (at most
    ``max_train`` and ``max_test`` rows); ``probes`` (from :func:`tpp_probes` on the same train data) saves
    refitting them for every SAE."""
    train_x, train_codes, test_x, test_codes, W_dec = _data(train_x, train_codes, test_x, test_codes, W_dec)
    train_labels = _class_labels("train_labels", train_labels, train_x.shape[0])
    classes = train_labels.shape[1]
    test_labels = _labels("test_labels", test_labels, test_x.shape[0], classes)
    n_values = _counts("n_values", n_values, W_dec.shape[0])
    train_rows = [balanced_rows(train_labels[:, i], max_train, f"train_labels[:, {i}]") for i in range(classes)]
    test_rows = [balanced_rows(test_labels[:, i], max_test, f"test_labels[:, {i}]") for i in range(classes)]
    used = torch.unique(torch.cat(test_rows))  # ablate only the rows some probe is tested on
    test_x, test_codes, test_labels = test_x[used], test_codes[used], test_labels[used]
    test_rows = [torch.searchsorted(used, r) for r in test_rows]
    if probes is None:
        probes = tpp_probes(train_x, train_labels, max_train)
    elif len(probes) != classes:
        raise ValueError(f"probes must hold one probe per class ({classes}), got {len(probes)}")

    def accuracies(x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([probes[j].accuracy(x[r], test_labels[r, j]) for j, r in enumerate(test_rows)])

    clean = accuracies(test_x)
    drops = torch.empty(len(n_values), classes, classes, dtype=torch.float64)  # [n, ablated i, probe j]
    for i, r in enumerate(train_rows):
        diff = _mean_diff(train_codes[r], train_labels[r, i]).clamp(min=0.0)
        effects = diff * (W_dec.double() @ probes[i].weight)
        for a, n in enumerate(n_values):
            drops[a, i] = clean - accuracies(_ablated(test_x, test_codes, W_dec, _top_n(effects, n)))
    intended = drops.diagonal(dim1=1, dim2=2)
    unintended = (drops.sum(2) - intended) / (classes - 1)
    return TppResult(
        {n: float((intended - unintended)[a].mean()) for a, n in enumerate(n_values)},
        {n: float(intended[a].mean()) for a, n in enumerate(n_values)},
        {n: float(unintended[a].mean()) for a, n in enumerate(n_values)},
    )
