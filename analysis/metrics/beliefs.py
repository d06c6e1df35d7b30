"""Belief-state geometry: linear regression from activations to exact beliefs.

Shai et al. (2024) fit a least-squares map with intercept from the residual stream to the belief
simplex and report its MSE. Here the fit uses the normal equations in float64 with ``AᵀWA`` factored
once, so a shuffled-target baseline costs one matrix product per block of permutations, not a refit each.
Metrics follow DESIGN.md: MSE is the mean over points and belief coordinates; R² is 1 − SSE/SST per
coordinate, averaged; both unweighted and weighted (by prefix probability, where given).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from analysis.metrics.splits import sequence_split
from groundtruth.checks import check_int
from groundtruth.hmm import HMM


@dataclass(frozen=True)
class Fit:
    """Scores of one regression on held-out sequences (and on the training sequences)."""

    mse: float
    r2: float
    mse_weighted: float | None
    r2_weighted: float | None
    train_mse: float
    train_r2: float
    shuffled_mse: float | None = None  # mean over permutations of the targets
    shuffled_r2: float | None = None
    coef: torch.Tensor | None = field(default=None, repr=False)  # [d + 1, K], intercept last
    mse_by_position: tuple[float, ...] | None = None  # held-out MSE at each context position
    r2_by_position: tuple[float, ...] | None = None

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The fitted map applied to activations ``[..., d]``, in float64."""
        return _design(x.reshape(-1, x.shape[-1]).double()).matmul(self.coef).reshape(*x.shape[:-1], -1)


def _design(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)


def _scores(pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> tuple[float, float]:
    """MSE and mean-per-coordinate R² of ``pred`` against ``y`` (``[n, K]`` or ``[P, n, K]``)."""
    if w is None:
        w = torch.ones(y.shape[-2], dtype=y.dtype)
    w = (w / w.sum())[:, None]
    err = ((pred - y) ** 2 * w).sum(-2)  # [..., K] weighted mean squared error per coordinate
    mean = (y * w).sum(-2, keepdim=True)
    var = ((y - mean) ** 2 * w).sum(-2)
    r2 = torch.where(var > 1e-15, 1 - err / var.clamp(min=1e-300), torch.nan)  # undefined for constants
    return float(err.mean()), float(r2.nanmean())


def regress(
    x: torch.Tensor,
    y: torch.Tensor,
    test: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    shuffles: int = 0,
    generator: torch.Generator | None = None,
) -> Fit:
    """Fit ``y ≈ x β + c`` on the rows where ``test`` is False and score on the rows where it is True.

    ``x [n, d]`` activations, ``y [n, K]`` targets, ``test [n]`` boolean. ``weights [n]`` (prefix
    probabilities) weight the fit and the weighted scores. ``shuffles`` permutations of the training
    targets give the shuffled-target baseline.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or test.shape != (x.shape[0],):
        raise ValueError(
            f"x [n, d], y [n, K] and test [n] must agree, got {tuple(x.shape)}, {tuple(y.shape)}, {tuple(test.shape)}"
        )
    if not bool(test.any()) or bool(test.all()):
        raise ValueError("test must mark some rows, and not all of them, as held out")
    a, y = _design(x.double()), y.double()
    w = torch.ones(len(y), dtype=torch.float64) if weights is None else weights.double()
    train = ~test
    a_tr, y_tr, w_tr = a[train], y[train], w[train]
    gram = a_tr.T @ (a_tr * w_tr[:, None])
    gram += torch.eye(gram.shape[0], dtype=gram.dtype) * 1e-10 * gram.diagonal().mean()
    factor = torch.linalg.cholesky(gram)
    coef = torch.cholesky_solve(a_tr.T @ (y_tr * w_tr[:, None]), factor)
    pred = a[test] @ coef
    mse, r2 = _scores(pred, y[test], None)
    mse_w, r2_w = _scores(pred, y[test], w[test]) if weights is not None else (None, None)
    train_mse, train_r2 = _scores(a_tr @ coef, y_tr, None)
    shuffled_mse = shuffled_r2 = None
    if shuffles:
        shuffled_mse, shuffled_r2 = _shuffled(a_tr * w_tr[:, None], y_tr, a[test], y[test], factor, shuffles, generator)
    return Fit(mse, r2, mse_w, r2_w, train_mse, train_r2, shuffled_mse, shuffled_r2, coef)


def _shuffled(aw_tr, y_tr, a_te, y_te, factor, shuffles: int, generator, max_bytes: int = 2**28):
    """Mean held-out MSE and R² of fits to permuted training targets. The factor of ``AᵀWA`` is
    reused: each block of permutations costs one matrix product, and blocks keep memory bounded."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    n, k = y_tr.shape
    d = aw_tr.shape[1]
    block = max(1, min(shuffles, max_bytes // (8 * k * max(n, len(y_te)))))
    y_cols = y_tr.T.contiguous()  # gathering along contiguous columns is the cheap layout
    mse = r2 = 0.0
    for start in range(0, shuffles, block):
        p = min(block, shuffles - start)
        perms = torch.stack([torch.randperm(n, generator=g) for _ in range(p)])
        y_perm = y_cols[:, perms.reshape(-1)].reshape(k * p, n)  # row (j, q): target j under permutation q
        rhs = (y_perm @ aw_tr).reshape(k, p, d).permute(2, 1, 0).reshape(d, p * k)
        coefs = torch.cholesky_solve(rhs, factor).reshape(d, p, k).permute(1, 0, 2)
        block_mse, block_r2 = _scores(a_te @ coefs, y_te.expand(p, -1, -1), None)
        mse, r2 = mse + block_mse * p / shuffles, r2 + block_r2 * p / shuffles
    return mse, r2


def belief_regression(
    acts: torch.Tensor,
    beliefs: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    test_fraction: float = 0.2,
    shuffles: int = 0,
    seed: int = 0,
) -> Fit:
    """Regress beliefs ``[b, t, S]`` on activations ``[b, t, d]`` over all positions, holding out
    a ``test_fraction`` of sequences. ``weights [b, t]`` are prefix probabilities, if any."""
    if acts.shape[:2] != beliefs.shape[:2]:
        raise ValueError(f"acts {tuple(acts.shape)} and beliefs {tuple(beliefs.shape)} disagree on [b, t]")
    g = torch.Generator().manual_seed(seed)
    b, t = beliefs.shape[:2]
    held_out = sequence_split(b, test_fraction, g)
    test = held_out[:, None].expand(b, t).reshape(-1)
    flat_w = None if weights is None else weights.reshape(-1)
    fit = regress(
        acts.reshape(b * t, -1), beliefs.reshape(b * t, -1), test, weights=flat_w, shuffles=shuffles, generator=g
    )
    pred = fit.predict(acts[held_out]).transpose(0, 1)  # [t, n_test, K]
    mse, r2 = zip(*(_scores(pred[k], beliefs[held_out][:, k].double(), None) for k in range(t)), strict=True)
    return replace(fit, mse_by_position=mse, r2_by_position=r2)


@dataclass(frozen=True)
class BeliefData:
    """Sequences to score a model on, with the belief after each token.

    ``exhaustive``: every possible sequence of ``n_ctx`` tokens, each (sequence, position) weighted by
    the sequence's probability, which weights every prefix by its own probability, so weighted
    averages are exact expectations. Otherwise a sample from the process, equally weighted (the
    sampling already follows the probabilities).
    """

    tokens: torch.Tensor  # [N, n_ctx] int64
    beliefs: torch.Tensor  # [N, n_ctx, S] float64, belief after each token
    weights: torch.Tensor  # [N, n_ctx] float64, summing to 1 over sequences at each position
    exhaustive: bool


def belief_data(hmm: HMM, n_ctx: int, *, max_sequences: int = 100_000, seed: int = 0) -> BeliefData:
    """All sequences of ``n_ctx`` tokens if there are at most ``max_sequences``, else a sample of that many."""
    check_int("n_ctx", n_ctx)
    check_int("max_sequences", max_sequences)
    if hmm.n_tokens**n_ctx <= max_sequences:
        tokens, beliefs, logp = hmm.all_sequences(n_ctx)
        weights = torch.exp(logp[:, -1:]).expand(-1, n_ctx)
        return BeliefData(tokens, beliefs[:, 1:], weights / weights[:, :1].sum(), True)
    sample = hmm.sample(max_sequences, n_ctx, torch.Generator().manual_seed(seed))
    weights = torch.full((max_sequences, n_ctx), 1 / max_sequences, dtype=torch.float64)
    return BeliefData(sample.tokens, sample.latents, weights, False)


def subset(data: BeliefData, n: int, seed: int = 0) -> BeliefData:
    """At most ``n`` of the sequences, drawn uniformly, their weights renormalised: weighted scores
    stay unbiased estimates of the full set's. For cheap repeated scoring (training snapshots)."""
    if len(data.tokens) <= n:
        return data
    pick = torch.randperm(len(data.tokens), generator=torch.Generator().manual_seed(seed))[:n]
    weights = data.weights[pick]
    return BeliefData(data.tokens[pick], data.beliefs[pick], weights / weights[:, :1].sum(), False)


def expected_loss(logits: torch.Tensor, hmm: HMM, data: BeliefData) -> float:
    """Mean cross-entropy (nats) of ``logits [N, n_ctx, V]`` against the exact next-token
    distributions, averaged over positions with ``data.weights``: the loss to compare with
    :func:`groundtruth.entropy.optimal_loss`."""
    target = hmm.next_token_probs(data.beliefs)
    ce = -(target * logits.double().log_softmax(-1)).sum(-1)
    return float((ce * data.weights).sum() / data.weights.sum())


def distance_agreement(
    beliefs: torch.Tensor, predicted: torch.Tensor, next_token: torch.Tensor, *, points: int = 2000, seed: int = 0
) -> dict[str, float]:
    """How well distances between predicted beliefs follow distances between true beliefs, and
    between next-token distributions: the squared correlation of pairwise Euclidean distances over
    ``points`` random points (Shai et al. 2024's analysis for RRXOR, whose many beliefs share few
    next-token distributions). A representation of beliefs, rather than of next-token predictions,
    scores higher on the first than on the second."""
    beliefs, predicted, next_token = (v.reshape(-1, v.shape[-1]).double() for v in (beliefs, predicted, next_token))
    pick = torch.randperm(len(beliefs), generator=torch.Generator().manual_seed(seed))[:points]
    upper = torch.triu_indices(len(pick), len(pick), 1)

    def distances(v: torch.Tensor) -> torch.Tensor:
        return torch.cdist(v[pick], v[pick])[upper[0], upper[1]]

    d_pred = distances(predicted)
    return {
        "beliefs_r2": float(torch.corrcoef(torch.stack([distances(beliefs), d_pred]))[0, 1] ** 2),
        "next_token_r2": float(torch.corrcoef(torch.stack([distances(next_token), d_pred]))[0, 1] ** 2),
    }
