"""Hierarchy metrics beside :func:`analysis.metrics.recovery.absorption`: feature hedging and the per-edge
absorption gap, for sources whose features form a forest (``parent[c]`` is c's parent, -1 for roots).

Conventions are recovery's: a latent fires when its code is ``!= 0``, a true feature when its code is
``> 0``; "g's latent" j_g is argmax_j cos(f_g, W_dec[j]) (signed cosine, as :func:`absorption` chooses
it); a latent's best-matching feature is argmax_g |cos| (SAELens).  An edge is a pair (parent[c], c);
edges are listed in increasing child index.  :func:`hedging_degree` is the hedging paper's own measure for
SAEs without ground truth (two decoders, no hierarchy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from analysis.metrics._inputs import (
    _check_codes,
    _check_dicts,
    _check_nonempty_rows,
    _check_parent,
    _chunk_rows,
    _cos,
    _latent_match,
    _unit_rows,
)
from groundtruth.checks import check_int, check_tensor

__all__ = [
    "DEFAULT_GAP_MIN_SAMPLES",
    "AbsorptionGapResult",
    "HedgingDegreeResult",
    "HedgingResult",
    "absorption_gap",
    "hedging",
    "hedging_degree",
]

DEFAULT_GAP_MIN_SAMPLES = 20
"""Least number of samples in *each* condition (parent on with the child off, and with it on) for an edge
to enter the mean absorption gap.  At 20 a recall's standard error is at most 0.11, so a mean over a few
dozen edges is good to a few hundredths; edges below it keep their values and counts in the result."""


def _edges(parent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    child = (parent >= 0).nonzero().flatten()
    return parent[child], child


# --------------------------------------------------------------------------------------------
# feature hedging
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HedgingResult:
    """Result of :func:`hedging`; per-edge tensors follow ``parent``/``child``, per-parent ones are [F]."""

    score: float
    """Mean of ``per_parent`` over tracked parents (NaN if none)."""
    per_parent: torch.Tensor
    """float64 [F]: norm of j_g's unit decoder in the span of g's children off f_g; NaN for non-parents and
    untracked parents."""
    tracked: torch.Tensor
    """bool [F]: g has children and j_g's best-matching feature (|cos|) is g itself."""
    parent_latent: torch.Tensor
    """int64 [F]: j_g for parents, -1 otherwise."""
    parent: torch.Tensor
    """int64 [E]: each edge's parent."""
    child: torch.Tensor
    """int64 [E]: each edge's child."""
    per_edge: torch.Tensor
    """float64 [E]: signed component of j_g's unit decoder along the child's direction off f_g (NaN where the
    parent is untracked).  Positive: the parent's latent leans towards the child (hedging)."""
    child_tracked: torch.Tensor
    """bool [E]: some latent's best-matching feature is the child."""


def hedging(true_dirs: torch.Tensor, W_dec: torch.Tensor, parent: torch.Tensor) -> HedgingResult:
    """Feature hedging of parents' latents towards their children (Chanin, Dulka & Garriga-Alonso 2025,
    "Feature Hedging: Correlated Features Break Narrow Sparse Autoencoders", arXiv:2505.11756).

    Why: an SAE too narrow to give a child its own latent lowers its MSE by mixing part of the child's
    direction into the parent's latent, which then no longer means the parent alone.  Absorption is the
    opposite failure (the parent folded into the children, worse in wide SAEs); hedging is worse in narrow
    ones.  The paper measures it on LLM SAEs without ground truth, as the share of a trained SAE's decoder
    change, when latents are added, that lies in the new latents' span; with the true directions known,
    the span of the features the latent should leave out is known, so this reads the decoder directly.

    Definition.  For a feature g with children C, j_g = argmax_j cos(f_g, W_dec[j]), ŵ its unit decoder
    row, and u_c the unit part of f_c orthogonal to f_g.  g is *tracked* when j_g's best-matching feature
    (argmax |cos|) is g; other parents have no latent of their own and get NaN.  Per edge (g, c): ŵ · u_c.
    Per parent: ‖P_C ŵ‖, the norm of ŵ's projection on span{u_c : c ∈ C}, in [0, 1]: 0 for a latent that is
    f_g plus anything outside the children's span, 1/√2 for ŵ ∝ f_g + f_c with f_c ⟂ f_g.  ``score`` is its
    mean over tracked parents.  Under superposition the true directions overlap, so a clean latent is not
    exactly 0: a decoder's error of norm e in random directions gives about e·sqrt(|C| / (d − 1)).
    Children parallel to their parent (u_c = 0) add nothing.
    """
    true_dirs, W_dec = _check_dicts(true_dirs, W_dec)
    parent = _check_parent(parent, true_dirs.shape[0])
    cos = _cos(true_dirs, W_dec)
    return _hedging(cos, true_dirs, W_dec, parent)


def _hedging(cos: torch.Tensor, true_dirs: torch.Tensor, W_dec: torch.Tensor, parent: torch.Tensor) -> HedgingResult:
    # The matching runs where cos is; the rest (O(parents × children × d)) in float64 on the CPU, which every
    # backend can hand its tensors to (MPS has no float64).
    n_features = cos.shape[0]
    dev = torch.device("cpu")
    match, best = _latent_match(cos).to(dev), cos.argmax(dim=1).to(dev)
    true_dirs, W_dec, parent = true_dirs.to(dev), W_dec.to(dev), parent.to(dev)
    edge_parent, edge_child = _edges(parent)
    has_child = torch.zeros(n_features, dtype=torch.bool, device=dev)
    has_child[edge_parent] = True
    j_g = torch.where(has_child, best, -1)
    tracked = has_child & (match[j_g.clamp_min(0)] == torch.arange(n_features, device=dev))
    child_tracked = torch.zeros(n_features, dtype=torch.bool, device=dev)
    child_tracked[match] = True

    f = _unit_rows(true_dirs.double())
    w = _unit_rows(W_dec.double())
    f_g = f[edge_parent]  # [E, d]
    r = f[edge_child] - (f[edge_child] * f_g).sum(-1, keepdim=True) * f_g
    u = torch.where(r.norm(dim=-1, keepdim=True) > 1e-6, _unit_rows(r.double()), 0.0)  # child ∥ parent: no direction
    w_e = w[j_g[edge_parent].clamp_min(0)]  # [E, d]
    edge_ok = tracked[edge_parent]
    nan = torch.tensor(math.nan, dtype=torch.float64, device=dev)
    per_edge = torch.where(edge_ok, (w_e * u).sum(-1), nan)

    # ‖P_C ŵ‖² = bᵀ G⁺ b with G the Gram matrix of the children's u and b = U ŵ, batched over parents by
    # padding every parent's children to the largest family with zero rows (which G⁺ ignores).
    parents = has_child.nonzero().flatten()
    per_parent = torch.full((n_features,), math.nan, dtype=torch.float64, device=dev)
    if parents.numel():
        slot = torch.full((n_features,), -1, dtype=torch.int64, device=dev)
        slot[parents] = torch.arange(parents.numel(), device=dev)
        row = slot[edge_parent]
        counts = torch.bincount(row, minlength=parents.numel())
        first = torch.cumsum(counts, 0) - counts
        order = torch.argsort(row, stable=True)  # edges grouped by parent; col = rank within the family
        col = torch.empty_like(row)
        col[order] = torch.arange(edge_child.numel(), device=dev) - first[row[order]]
        U = torch.zeros(parents.numel(), int(counts.max()), f.shape[1], dtype=torch.float64, device=dev)
        U[row, col] = u
        b = (U * w[j_g[parents]].unsqueeze(1)).sum(-1)  # [P, k]
        G = U @ U.transpose(1, 2)
        proj_sq = (b.unsqueeze(1) @ torch.linalg.pinv(G, hermitian=True, rtol=1e-9) @ b.unsqueeze(2)).flatten()
        per_parent[parents] = proj_sq.clamp(0.0, 1.0).sqrt()
        per_parent[~tracked] = math.nan
    ok = ~torch.isnan(per_parent)
    score = float(per_parent[ok].mean()) if bool(ok.any()) else math.nan
    return HedgingResult(
        score=score,
        per_parent=per_parent,
        tracked=tracked,
        parent_latent=j_g,
        parent=edge_parent,
        child=edge_child,
        per_edge=per_edge,
        child_tracked=child_tracked[edge_child],
    )


@dataclass(frozen=True)
class HedgingDegreeResult:
    """Result of :func:`hedging_degree`."""

    score: float
    """max(0, (in_new_span − baseline) / (1 − baseline)): 0 no more than chance, 1 every change in the new span."""
    in_new_span: float
    """Mean norm of the original latents' (unit) decoder changes projected on the new latents' span."""
    baseline: float
    """The same for a uniformly random subspace of that dimension (its expectation, in closed form)."""
    mean_change: float
    """Mean norm of the changes themselves."""


def _random_projection_norm(k: int, d: int) -> float:
    """E‖P v‖ for a unit v and a uniformly random k-dimensional subspace of R^d: ‖P v‖² ~ Beta(k/2, (d−k)/2),
    so E‖P v‖ = Γ((k+1)/2) Γ(d/2) / (Γ(k/2) Γ((d+1)/2))."""
    return math.exp(math.lgamma((k + 1) / 2) + math.lgamma(d / 2) - math.lgamma(k / 2) - math.lgamma((d + 1) / 2))


def hedging_degree(W_dec_control: torch.Tensor, W_dec_extended: torch.Tensor) -> HedgingDegreeResult:
    """The hedging degree of an SAE without ground truth (Chanin, Dulka & Garriga-Alonso 2025, arXiv:2505.11756,
    as their code computes it): train an SAE (``W_dec_control`` [N, d]), add K latents and train on
    (``W_dec_extended`` [N + K, d], its first N rows the same latents), and ask how much of the change in the
    original latents lies in the span of the new ones.

    Why: a latent that hedged towards features the SAE could not fit sheds those components once new latents
    take the features, so its decoder moves into the new latents' span; drift from further training moves it
    in no particular direction.  Rows are normalised first (the authors fold decoder norms into the encoder).
    The chance level is the expected projection on a uniformly random K-dimensional subspace, here in closed
    form (the authors average 50 Gaussian draws).  For SAEs on sources with known features, :func:`hedging`
    reads hedging off one decoder instead.  ``score`` is NaN when the baseline reaches 1 (changes of norm ~1 or
    more, where the normalisation breaks down), and 0 when the new latents span all d dimensions (K ≥ d): keep
    K well below d.
    """
    W_c = check_tensor("W_dec_control", W_dec_control, 2).detach()
    W_e = check_tensor("W_dec_extended", W_dec_extended, 2).detach()
    _check_nonempty_rows("W_dec_control", W_c)
    n, d = W_c.shape
    if W_e.shape[1] != d or W_e.shape[0] <= n:
        raise ValueError(
            f"W_dec_extended has shape {tuple(W_e.shape)} but W_dec_control has shape {tuple(W_c.shape)}; the "
            "extended SAE needs the same d and more latents (its first N rows are the control's latents)"
        )
    W_c = _unit_rows(W_c.cpu().double())
    W_e = _unit_rows(W_e.cpu().double())
    delta = W_e[:n] - W_c
    new = W_e[n:]
    U, S, _ = torch.linalg.svd(new.T, full_matrices=False)  # an orthonormal basis of the new rows' span
    basis = U[:, S / S.max().clamp_min(1e-300) > 1e-9]  # rank-deficient (or zero) new rows: a smaller span
    in_span = float((delta @ basis).norm(dim=1).mean())
    mean_change = float(delta.norm(dim=1).mean())
    baseline = _random_projection_norm(basis.shape[1], d) * mean_change if basis.shape[1] else 0.0
    score = max(0.0, (in_span - baseline) / (1.0 - baseline)) if baseline < 1.0 else math.nan
    return HedgingDegreeResult(score=score, in_new_span=in_span, baseline=baseline, mean_change=mean_change)


# --------------------------------------------------------------------------------------------
# the per-edge absorption gap
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AbsorptionGapResult:
    """Result of :func:`absorption_gap`; every tensor is per edge, in the order of ``parent``/``child``."""

    score: float
    """Mean of ``gap`` over edges with at least ``min_samples`` samples in each condition (NaN if none)."""
    min_samples: int
    n_scored: int
    """Edges in ``score``."""
    parent: torch.Tensor
    """int64 [E]."""
    child: torch.Tensor
    """int64 [E]."""
    parent_latent: torch.Tensor
    """int64 [E]: j_g of the edge's parent."""
    n_without: torch.Tensor
    """int64 [E]: samples with the parent on and the child off."""
    fired_without: torch.Tensor
    """int64 [E]: of those, samples where j_g fires."""
    n_with: torch.Tensor
    """int64 [E]: samples with the parent and the child on."""
    fired_with: torch.Tensor
    """int64 [E]: of those, samples where j_g fires."""
    recall_without: torch.Tensor
    """float64 [E]: fired_without / n_without (NaN when n_without = 0)."""
    recall_with: torch.Tensor
    """float64 [E]: fired_with / n_with (NaN when n_with = 0)."""
    gap: torch.Tensor
    """float64 [E]: recall_without − recall_with (NaN unless both are defined)."""


class _GapStats:
    """Streams the counts behind every edge's gap over chunks of rows.

    Per parent (a column gather of [chunk, parents]): how often it is on, and on with its latent firing.  Per
    edge, from the index list of the true features on (O(non-zeros)): how often parent and child are on
    together, and with the parent's latent firing.  The child-off counts are the differences.
    """

    def __init__(self, cos: torch.Tensor, parent: torch.Tensor, chunk_size: int | None = None) -> None:
        dev = cos.device
        parent = parent.to(dev)
        self.parent, self.child = _edges(parent)
        self.parents = torch.unique(self.parent)  # [P]
        j = cos.argmax(dim=1)  # each feature's latent, by signed cosine
        self.latent = j[self.parent]
        self.parent_latent = j[self.parents]
        self.slot = torch.full((parent.numel(),), -1, dtype=torch.int64, device=dev)
        self.slot[self.parents] = torch.arange(self.parents.numel(), device=dev)
        self.edge_of = torch.full((parent.numel(),), -1, dtype=torch.int64, device=dev)  # a child's edge
        self.edge_of[self.child] = torch.arange(self.child.numel(), device=dev)
        self.step = _chunk_rows(max(parent.numel(), 1), chunk_size)
        zeros = {"dtype": torch.int64, "device": dev}
        self.n_on = torch.zeros(self.parents.numel(), **zeros)
        self.fired_on = torch.zeros(self.parents.numel(), **zeros)
        self.n_with = torch.zeros(self.child.numel(), **zeros)
        self.fired_with = torch.zeros(self.child.numel(), **zeros)

    def add(self, codes: torch.Tensor, true_codes: torch.Tensor) -> None:
        dev = self.parent.device
        for i in range(0, codes.shape[0], self.step):
            c = codes[i : i + self.step].to(dev)
            on = true_codes[i : i + self.step].to(dev) > 0
            fires = c[:, self.parent_latent] != 0
            parent_on = on[:, self.parents]
            self.n_on += parent_on.sum(0)
            self.fired_on += (parent_on & fires).sum(0)
            r, f = on.nonzero(as_tuple=True)
            e = self.edge_of[f]
            r, e = r[e >= 0], e[e >= 0]  # (sample, edge) where the child is on
            both = on[r, self.parent[e]]
            r, e = r[both], e[both]
            self.n_with += torch.bincount(e, minlength=self.child.numel())
            fired = fires[r, self.slot[self.parent[e]]]
            self.fired_with += torch.bincount(e[fired], minlength=self.child.numel())

    def result(self, min_samples: int) -> AbsorptionGapResult:
        slot = self.slot[self.parent]
        n_wo, f_wo = self.n_on[slot] - self.n_with, self.fired_on[slot] - self.fired_with
        n_wo, f_wo, n_w, f_w = (t.cpu() for t in (n_wo, f_wo, self.n_with, self.fired_with))
        nan = torch.tensor(math.nan, dtype=torch.float64)
        r_wo = torch.where(n_wo > 0, f_wo.double() / n_wo.clamp_min(1), nan)
        r_w = torch.where(n_w > 0, f_w.double() / n_w.clamp_min(1), nan)
        gap = r_wo - r_w
        scored = (n_wo >= min_samples) & (n_w >= min_samples)
        return AbsorptionGapResult(
            score=float(gap[scored].mean()) if bool(scored.any()) else math.nan,
            min_samples=min_samples,
            n_scored=int(scored.sum()),
            parent=self.parent.cpu(),
            child=self.child.cpu(),
            parent_latent=self.latent.cpu(),
            n_without=n_wo,
            fired_without=f_wo,
            n_with=n_w,
            fired_with=f_w,
            recall_without=r_wo,
            recall_with=r_w,
            gap=gap,
        )


def _check_min_samples(min_samples: Any, name: str = "min_samples") -> int:
    return check_int(name, min_samples, minimum=1)


def absorption_gap(
    codes: torch.Tensor,
    true_codes: torch.Tensor,
    true_dirs: torch.Tensor,
    W_dec: torch.Tensor,
    parent: torch.Tensor,
    min_samples: int = DEFAULT_GAP_MIN_SAMPLES,
    *,
    chunk_size: int | None = None,
) -> AbsorptionGapResult:
    """The hierarchy-conditioned absorption gap of every (parent, child) edge (SAELens issue #729, "Add
    hierarchy-conditioned feature-absorption metrics to synthetic SAE evaluation").

    Why: :func:`~analysis.metrics.recovery.absorption` needs a threshold on the absorbing latent's decoder
    and a latent that stands in; the gap asks only whether the parent's latent stops firing when a child is
    present, per edge, with the counts behind it, so a failure on one branch is not averaged away.

    Per edge (g, c), with j_g = argmax_j cos(f_g, W_dec[j]) (signed, as absorption):
    gap = P(j_g fires | g on, c off) − P(j_g fires | g on, c on).  1: the latent is silent whenever the
    child is on (complete absorption); 0: the child makes no difference; negative: it fires more with the
    child (as a hedged latent can).  A recall is NaN when its condition never occurs, a gap when either is
    NaN.  ``score`` is the unweighted mean gap over edges with at least ``min_samples`` samples in both
    conditions (:data:`DEFAULT_GAP_MIN_SAMPLES`); ``n_scored`` says how many.  Streamed over ``chunk_size``
    rows (by default ~4M true codes a chunk); the work is O(n × parents) plus O(non-zero true codes).
    """
    true_dirs, W_dec = _check_dicts(true_dirs, W_dec)
    codes, true_codes = _check_codes(codes, true_codes, true_dirs, W_dec)
    parent = _check_parent(parent, true_dirs.shape[0])
    min_samples = _check_min_samples(min_samples)
    stats = _GapStats(_cos(true_dirs, W_dec), parent, chunk_size)
    stats.add(codes, true_codes)
    return stats.result(min_samples)
