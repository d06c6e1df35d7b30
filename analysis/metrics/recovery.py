"""Recovery metrics: how well a sparse dictionary (an SAE) recovers known ground-truth features.

Every formula is the one pinned in DESIGN.md ("Metric definitions (pinned)"); the conventions
DESIGN leaves open follow SAELens's ``sae_lens.synthetic.evals`` (the SynthSAEBench code,
Chanin & Garriga-Alonso 2026) so that our numbers can be compared with published ones:

* A latent *fires* when its code is non-zero (``!= 0``), as in SAELens and as in L0 and dead
  latents; for ReLU-type SAEs this is the same as ``> 0``.  A true feature fires when its code
  is ``> 0``.
* Latent -> true feature matching ("the best-matching true feature" of a latent, used by
  uniqueness, precision/recall/F1 and absorption) is ``argmax_g |cos(W_dec[j], f_g)|``: SAELens
  uses the absolute cosine.  Ties go to the lowest index (``torch.argmax``).
* True feature -> latent matching ("the latent of feature g", used by MMCS true->learned and by
  absorption) uses the *signed* cosine, as MMCS is pinned with the signed cosine.
* MCC uses ``|cos|`` (pinned).
* Cosines of a zero row are 0, never NaN.

Quantities that are undefined on the given data (FVE of constant data, shrinkage when every
``‖x‖ = 0``, γ when ``E[x·x̂] = 0``, an absorption score with no eligible sample) are returned as
NaN rather than a made-up 0 or 1 (SAELens returns 0/1 there; see the individual docstrings).

All functions take plain torch tensors and stream over rows in chunks where the data can be
large, so that e.g. n = 100k samples with m = F = 4096 needs only a few hundred MB of scratch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from scipy.optimize import linear_sum_assignment

from analysis.metrics._inputs import (
    _acc_dtype,
    _check_codes,
    _check_dicts,
    _check_nonempty_rows,
    _check_parent,
    _chunk_rows,
    _cos,
    _latent_match,
)
from analysis.metrics.hierarchy import DEFAULT_GAP_MIN_SAMPLES, _check_min_samples, _GapStats, _hedging
from groundtruth.checks import check_tensor

__all__ = [
    "AbsorptionResult",
    "DEFAULT_ABSORPTION_THRESHOLD",
    "Direction",
    "RecoveryReport",
    "absorption",
    "cosine_matrix",
    "dead_latents",
    "fve",
    "l0",
    "latent_classification",
    "mcc",
    "mmcs",
    "mse",
    "relative_reconstruction_bias",
    "score_sae",
    "shrinkage",
    "uniqueness",
]

Direction = Literal["true_to_learned", "learned_to_true"]
_DIRECTIONS: tuple[str, ...] = ("true_to_learned", "learned_to_true")

DEFAULT_ABSORPTION_THRESHOLD = 0.2
"""Default decoder-cosine threshold for absorption.

A latent that has fully absorbed parent g into child c has a decoder ≈ f_c + f_g, i.e. cosine
≈ 0.7 with f_g when f_c ⟂ f_g; partial absorption gives smaller but clearly positive values.
Unrelated unit directions in d dimensions have |cos| ~ 1/sqrt(d) (0.036 at d = 768, 0.0625 at
d = 256), so 0.2 is more than 3 standard deviations of chance at d ≥ 256 while still catching
partial absorption.  The 0.1 sometimes used is within 2 sigma of chance at d = 256.  For very
low-dimensional toys (d < ~200) pass a larger threshold.
"""


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------


def _check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; they must match"
        )


# --------------------------------------------------------------------------------------------
# streaming accumulators (shared by the stand-alone functions and score_sae)
# --------------------------------------------------------------------------------------------


class _ReconStats:
    """Streams reconstruction statistics; per-batch centring keeps the variance stable."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | float = 0.0  # sum ‖x - mean‖²
        self.sse: torch.Tensor | float = 0.0  # sum ‖x - x̂‖²
        self.sq_norm: torch.Tensor | float = 0.0  # sum ‖x‖²
        self.xhat_sq: torch.Tensor | float = 0.0  # sum ‖x̂‖²
        self.dot: torch.Tensor | float = 0.0  # sum x·x̂
        self.shrink_sum: torch.Tensor | float = 0.0  # sum over ‖x‖>0 of ‖x̂‖/‖x‖
        self.shrink_n: torch.Tensor | int = 0

    def add(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        b = x.shape[0]
        if b == 0:
            return
        acc = _acc_dtype(x.device)
        xf = x.to(acc)
        hf = x_hat.to(device=x.device, dtype=acc)
        mu_b = xf.mean(dim=0)
        m2_b = (xf - mu_b).pow(2).sum()
        if self.mean is None:
            self.mean, self.m2 = mu_b, m2_b
        else:
            tot = self.n + b
            delta = mu_b - self.mean
            self.mean = self.mean + delta * (b / tot)
            self.m2 = self.m2 + m2_b + delta.pow(2).sum() * (self.n * b / tot)
        self.n += b
        self.sse = self.sse + (xf - hf).pow(2).sum()
        self.sq_norm = self.sq_norm + xf.pow(2).sum()
        self.xhat_sq = self.xhat_sq + hf.pow(2).sum()
        self.dot = self.dot + (xf * hf).sum()
        x_norm = xf.norm(dim=1)
        valid = x_norm > 0
        self.shrink_sum = self.shrink_sum + (hf.norm(dim=1)[valid] / x_norm[valid]).sum()
        self.shrink_n = self.shrink_n + valid.sum()

    def mse(self) -> float:
        return float(self.sse) / self.n

    def fve(self) -> float:
        var = float(self.m2) / self.n
        mean_sq = float(self.sq_norm) / self.n
        if var <= 1e-12 * mean_sq or var == 0.0:
            return math.nan
        return 1.0 - self.mse() / var

    def shrinkage(self) -> float:
        k = int(self.shrink_n)
        return float(self.shrink_sum) / k if k else math.nan

    def gamma(self) -> float:
        dot = float(self.dot)
        return float(self.xhat_sq) / dot if dot != 0.0 else math.nan


class _CodeStats:
    """Streams everything that depends on the codes: L0, dead latents, per-latent
    classification counts and (with a hierarchy) absorption counts.

    Each chunk is turned into the index lists of its non-zero codes and active true features,
    so the work and scratch memory are O(non-zeros) per chunk -- no [n, m, F] tensor, no
    [m, F] matmul, and no slow column reductions of dense [chunk, m] masks.
    """

    def __init__(
        self,
        cos: torch.Tensor,
        match: torch.Tensor,
        parent: torch.Tensor | None,
        threshold: float,
        chunk_size: int | None = None,
    ) -> None:
        n_features, m = cos.shape
        dev = cos.device
        self.m, self.n_features, self.device = m, n_features, dev
        self.match = match.to(dev)
        self.step = _chunk_rows(max(m, n_features), chunk_size)
        self.n = 0
        i64 = {"dtype": torch.int64, "device": dev}
        self.nnz = torch.zeros((), **i64)
        self.fired = torch.zeros(m, dtype=torch.bool, device=dev)
        self.tp = torch.zeros(m, **i64)
        self.fp = torch.zeros(m, **i64)
        self.fn = torch.zeros(m, **i64)
        self.parent = None if parent is None else parent.to(dev)
        if self.parent is not None:
            self._init_absorption(cos, threshold)

    def _init_absorption(self, cos: torch.Tensor, threshold: float) -> None:
        parent, dev = self.parent, self.device
        assert parent is not None
        is_child = parent >= 0
        has_child = torch.zeros(self.n_features, dtype=torch.bool, device=dev)
        has_child[parent[is_child]] = True
        self.parents = has_child.nonzero().flatten()  # [P] feature ids
        n_par = self.parents.shape[0]
        self.slot = torch.full((self.n_features,), -1, dtype=torch.int64, device=dev)
        self.slot[self.parents] = torch.arange(n_par, device=dev)
        # g's latent j_g: best *signed* cosine with f_g.
        self.parent_latent = cos[self.parents].argmax(dim=1) if n_par else self.parents.clone()
        # Candidate absorbers of g: latents whose best-matching true feature (|cos|) is a child
        # of g and whose decoder has signed cosine >= threshold with f_g.  A latent matches one
        # feature, which has at most one parent, so each latent absorbs for at most one g.
        match_parent = parent[self.match]  # [m], -1 where the matched feature is a root
        cos_with_parent = cos[match_parent.clamp_min(0), torch.arange(self.m, device=dev)]
        absorbs = (match_parent >= 0) & (cos_with_parent >= threshold)
        self.absorber_slot = torch.where(absorbs, self.slot[match_parent.clamp_min(0)], -1)
        self.n_eligible = torch.zeros(n_par, dtype=torch.int64, device=dev)
        self.n_absorbed = torch.zeros(n_par, dtype=torch.int64, device=dev)

    def add(self, codes: torch.Tensor, true_codes: torch.Tensor) -> None:
        for i in range(0, codes.shape[0], self.step):
            self._add(codes[i : i + self.step], true_codes[i : i + self.step])

    def _add(self, codes: torch.Tensor, true_codes: torch.Tensor) -> None:
        m, dev = self.m, self.device
        lf = codes.to(dev) != 0  # latent fires (!= 0, as SAELens)
        gf = true_codes.to(dev) > 0  # true feature fires
        self.n += lf.shape[0]
        lr, lc = lf.nonzero(as_tuple=True)
        gr, gc = gf.nonzero(as_tuple=True)
        l_count = torch.bincount(lc, minlength=m)
        self.nnz += lc.numel()
        self.fired |= l_count > 0
        hit = gf[lr, self.match[lc]]  # latent fires and its matched feature fires
        tp = torch.bincount(lc[hit], minlength=m)
        g_count = torch.bincount(gc, minlength=self.n_features)
        self.tp += tp
        self.fp += l_count - tp
        self.fn += g_count[self.match] - tp
        if self.parent is not None and self.parents.numel():
            self._add_absorption(lf, gf, lr, lc, gr, gc)

    def _add_absorption(
        self,
        lf: torch.Tensor,
        gf: torch.Tensor,
        lr: torch.Tensor,
        lc: torch.Tensor,
        gr: torch.Tensor,
        gc: torch.Tensor,
    ) -> None:
        assert self.parent is not None
        n_par = self.parents.shape[0]
        # Eligible (sample, parent) pairs: some child of g is active and g is active.
        pc = self.parent[gc]
        child_ev = pc >= 0
        r, g = gr[child_ev], pc[child_ev]
        keep = gf[r, g]
        key = torch.unique(r[keep] * n_par + self.slot[g[keep]])
        er, ep = key // n_par, key % n_par
        self.n_eligible += torch.bincount(ep, minlength=n_par)
        silent = ~lf[er, self.parent_latent[ep]]
        # (sample, parent) pairs with an active candidate absorber.
        a_slot = self.absorber_slot[lc]
        a_ev = a_slot >= 0
        a_key = lr[a_ev] * n_par + a_slot[a_ev]
        absorbed = silent & torch.isin(key, a_key)
        self.n_absorbed += torch.bincount(ep[absorbed], minlength=n_par)

    def l0(self) -> float:
        return int(self.nnz) / self.n

    def classification(self) -> dict[str, Any]:
        tp, fp, fn = (t.to(torch.float64).cpu() for t in (self.tp, self.fp, self.fn))
        zero = torch.zeros_like(tp)
        precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), zero)
        recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp_min(1), zero)
        denom = precision + recall
        f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-300), zero)
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "precision_mean": float(precision.mean()),
            "recall_mean": float(recall.mean()),
            "f1_mean": float(f1.mean()),
            "best_match": self.match.cpu(),
        }

    def absorption(self) -> AbsorptionResult:
        assert self.parent is not None
        n_el = torch.zeros(self.n_features, dtype=torch.int64)
        n_ab = torch.zeros(self.n_features, dtype=torch.int64)
        j_g = torch.full((self.n_features,), -1, dtype=torch.int64)
        parents = self.parents.cpu()
        if parents.numel():
            n_el[parents] = self.n_eligible.cpu()
            n_ab[parents] = self.n_absorbed.cpu()
            j_g[parents] = self.parent_latent.cpu()
        per_parent = torch.full((self.n_features,), math.nan, dtype=torch.float64)
        ok = n_el > 0
        per_parent[ok] = n_ab[ok].double() / n_el[ok].double()
        score = float(per_parent[ok].mean()) if bool(ok.any()) else math.nan
        return AbsorptionResult(score=score, per_parent=per_parent, n_eligible=n_el, n_absorbed=n_ab, parent_latent=j_g)


# --------------------------------------------------------------------------------------------
# sparsity and reconstruction
# --------------------------------------------------------------------------------------------


def l0(codes: torch.Tensor) -> float:
    """Mean over samples of the number of non-zero codes (DESIGN: L0).

    Why: the sparsity an SAE actually achieves; counted with ``!= 0`` so signed latents count.
    """
    codes = check_tensor("codes", codes, 2)
    _check_nonempty_rows("codes", codes)
    step = _chunk_rows(codes.shape[1], None)
    nnz = sum(int((codes[i : i + step] != 0).sum()) for i in range(0, codes.shape[0], step))
    return nnz / codes.shape[0]


def _recon(x: Any, x_hat: Any) -> _ReconStats:
    x = check_tensor("x", x, 2)
    x_hat = check_tensor("x_hat", x_hat, 2)
    _check_same_shape("x", x, "x_hat", x_hat)
    _check_nonempty_rows("x", x)
    stats = _ReconStats()
    step = _chunk_rows(x.shape[1], None)
    for i in range(0, x.shape[0], step):
        stats.add(x[i : i + step].detach(), x_hat[i : i + step].detach())
    return stats


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """MSE = E‖x − x̂‖², summed over dimensions and averaged over samples (DESIGN).

    Why: the raw reconstruction error; sum over dims keeps it comparable to FVE's variance.
    """
    return _recon(x, x_hat).mse()


def fve(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance explained, 1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²) (DESIGN).

    Why: scale-free reconstruction quality; this is SAELens's ``ExplainedVarianceCalculator``
    / SynthSAEBench formula (total variance summed over dimensions).  Computed with per-chunk
    centring in float64, which is algebraically identical but immune to the cancellation of
    ``E‖x‖² − ‖E x‖²`` when x has a large mean.  Returns NaN when x has (numerically) zero
    variance, where SAELens returns 1 (perfect reconstruction) or 0.
    """
    return _recon(x, x_hat).fve()


def shrinkage(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Shrinkage E[‖x̂‖ / ‖x‖] over rows with ‖x‖ > 0 (DESIGN).

    Why: L1-trained SAEs systematically shrink their outputs (Wright & Sharkey 2024,
    "Addressing Feature Suppression in SAEs"); 1 means no shrinkage.  Rows with ‖x‖ = 0 are
    skipped (SAELens skips ‖x‖ ≤ 1e-6); NaN when every row is zero (SAELens returns 0).
    """
    return _recon(x, x_hat).shrinkage()


def relative_reconstruction_bias(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Relative reconstruction bias γ = E‖x̂‖² / E[x·x̂] (DESIGN).

    Why: the optimal rescaling argmin_γ E‖x̂/γ − x‖², from Rajamanoharan et al. 2024 ("Improving
    Dictionary Learning with Gated Sparse Autoencoders"); γ < 1 means systematic shrinkage.
    NaN when E[x·x̂] = 0.
    """
    return _recon(x, x_hat).gamma()


def dead_latents(codes: torch.Tensor) -> torch.Tensor:
    """Bool mask [m] of latents that are never non-zero over the given samples (DESIGN).

    Why: dead latents waste dictionary capacity.  The answer depends on how many samples are
    given, so report that number alongside (``RecoveryReport.n_eval``).
    """
    codes = check_tensor("codes", codes, 2)
    fired = torch.zeros(codes.shape[1], dtype=torch.bool, device=codes.device)
    step = _chunk_rows(codes.shape[1], None)
    for i in range(0, codes.shape[0], step):
        fired |= (codes[i : i + step] != 0).any(dim=0)
    return ~fired


# --------------------------------------------------------------------------------------------
# dictionary geometry
# --------------------------------------------------------------------------------------------


def cosine_matrix(true_dirs: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """Cosine similarities [F, m] between true directions [F, d] and decoder rows [m, d].

    Why: every dictionary-recovery metric is a function of this matrix.  Rows are normalised;
    a zero row has cosine 0 with everything (never NaN).  Computed in at least float32 on
    ``W_dec``'s device.
    """
    true_dirs, W_dec = _check_dicts(true_dirs, W_dec)
    return _cos(true_dirs, W_dec)


def _mmcs_from_cos(cos: torch.Tensor, direction: str) -> float:
    if direction == "true_to_learned":
        return float(cos.max(dim=1).values.double().mean())
    if direction == "learned_to_true":
        return float(cos.max(dim=0).values.double().mean())
    raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")


def mmcs(true_dirs: torch.Tensor, W_dec: torch.Tensor, direction: Direction) -> float:
    """Mean max cosine similarity, signed cosine (Sharkey, Braun & Millidge 2022, "Taking
    features out of superposition with sparse autoencoders").

    Why: the classic dictionary-recovery score.  ``direction`` is required because the two
    readings differ (DESIGN: always say which):
    ``"true_to_learned"`` = mean over true features g of max_j cos(f_g, W_dec[j]) (is every
    feature found?); ``"learned_to_true"`` = mean over latents j of max_g cos(f_g, W_dec[j])
    (is every latent a feature?).
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    return _mmcs_from_cos(cosine_matrix(true_dirs, W_dec), direction)


def _mcc_from_cos(cos: torch.Tensor) -> float:
    a = cos.abs().double().cpu().numpy()
    rows, cols = linear_sum_assignment(a, maximize=True)
    return float(a[rows, cols].mean())


def mcc(true_dirs: torch.Tensor, W_dec: torch.Tensor) -> float:
    """Mean correlation coefficient: mean |cos| over the best one-to-one matching (DESIGN).

    Why: unlike MMCS, several latents cannot all claim the same feature.  The matching is the
    Hungarian optimum (``scipy.optimize.linear_sum_assignment``, maximising |cos|) between
    decoder rows and true directions; with m != F it has min(m, F) pairs and the mean is over
    those, exactly as SAELens's ``mean_correlation_coefficient`` (which cites Song et al. 2025,
    "Position: Mechanistic Interpretability Should Prioritize Feature Consistency in SAEs",
    arXiv:2505.20254; the metric comes from the nonlinear-ICA literature).
    """
    return _mcc_from_cos(cosine_matrix(true_dirs, W_dec))


def uniqueness(true_dirs: torch.Tensor, W_dec: torch.Tensor) -> float:
    """Number of distinct best-matching true features / number of latents (DESIGN).

    Why: detects latents that duplicate each other.  A latent's best match is
    argmax_g |cos(f_g, W_dec[j])|, as in SAELens's ``feature_uniqueness`` (SynthSAEBench).
    """
    cos = cosine_matrix(true_dirs, W_dec)
    return int(_latent_match(cos).unique().numel()) / cos.shape[1]


# --------------------------------------------------------------------------------------------
# codes vs true codes
# --------------------------------------------------------------------------------------------


def latent_classification(
    codes: torch.Tensor,
    true_codes: torch.Tensor,
    true_dirs: torch.Tensor,
    W_dec: torch.Tensor,
    *,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Per-latent precision, recall and F1 of "latent fires" vs "its best-matching true feature
    fires" (DESIGN; SynthSAEBench / SAELens ``compute_classification_metrics``).

    Why: MCC only looks at decoder directions; this checks that a latent also *fires* when and
    only when its feature is present.  Conventions, identical to SAELens:

    * latent j fires when ``codes[:, j] != 0``; true feature g fires when ``true_codes[:, g] > 0``;
    * j's feature is argmax_g |cos(f_g, W_dec[j])|;
    * precision, recall and F1 are 0 where undefined, so a latent that never fires scores 0 on
      all three, and the means run over *all* m latents (dead latents included).

    Counts are accumulated over chunks of rows (``chunk_size``; by default a chunk holds ~4M
    codes) from the indices of the non-zero codes, so memory is O(chunk non-zeros), never a
    [n, m, F] tensor.

    Returns a dict with tensors ``precision``, ``recall``, ``f1`` (float64, [m]), floats
    ``precision_mean``, ``recall_mean``, ``f1_mean``, and ``best_match`` (int64, [m]).
    """
    true_dirs, W_dec = _check_dicts(true_dirs, W_dec)
    codes, true_codes = _check_codes(codes, true_codes, true_dirs, W_dec)
    cos = _cos(true_dirs, W_dec)
    stats = _CodeStats(cos, _latent_match(cos), None, 0.0, chunk_size)
    stats.add(codes, true_codes)
    return stats.classification()


@dataclass(frozen=True)
class AbsorptionResult:
    """Result of :func:`absorption`; per-feature tensors are indexed by true feature id."""

    score: float
    """Mean of ``per_parent`` over parents with at least one eligible sample (NaN if none)."""
    per_parent: torch.Tensor
    """float64 [F]: n_absorbed / n_eligible; NaN for non-parents and parents never eligible."""
    n_eligible: torch.Tensor
    """int64 [F]: samples where the parent and at least one of its children are truly active."""
    n_absorbed: torch.Tensor
    """int64 [F]: eligible samples that were absorbed."""
    parent_latent: torch.Tensor
    """int64 [F]: the latent j_g assigned to each parent (-1 for non-parents)."""


def absorption(
    codes: torch.Tensor,
    true_codes: torch.Tensor,
    true_dirs: torch.Tensor,
    W_dec: torch.Tensor,
    parent: torch.Tensor,
    threshold: float = DEFAULT_ABSORPTION_THRESHOLD,
    *,
    chunk_size: int | None = None,
) -> AbsorptionResult:
    """Feature-absorption rate for hierarchical features (Chanin et al. 2024, "A is for
    Absorption: Studying Feature Splitting and Absorption in Sparse Autoencoders",
    arXiv:2409.14507).

    Why: in a hierarchy an SAE can save L0 by folding the parent direction into its child
    latents, so the parent's latent stays silent exactly when a child is present.

    Definition.  ``parent[c]`` is the parent feature of c (-1 for roots).  For every feature g
    that has at least one child:

    * j_g = argmax_j cos(f_g, W_dec[j]) (signed cosine) is "g's latent";
    * a sample is *eligible* for g when g and at least one child of g are truly active
      (true code > 0);
    * an eligible sample is *absorbed* when j_g is silent (code == 0) and some active latent
      (code != 0) whose best-matching true feature (argmax |cos|, as everywhere here) is a child
      of g has signed decoder cosine with f_g ≥ ``threshold``.

    ``per_parent[g]`` = absorbed / eligible; ``score`` = mean of it over parents with ≥ 1
    eligible sample.  Only direct children count (absorption into grandchildren is scored
    against the intermediate parent).  See :data:`DEFAULT_ABSORPTION_THRESHOLD` for the choice
    of 0.2.  Vectorised over parents and streamed over ``chunk_size`` rows.
    """
    true_dirs, W_dec = _check_dicts(true_dirs, W_dec)
    codes, true_codes = _check_codes(codes, true_codes, true_dirs, W_dec)
    parent = _check_parent(parent, true_dirs.shape[0])
    threshold = _check_threshold(threshold)
    cos = _cos(true_dirs, W_dec)
    stats = _CodeStats(cos, _latent_match(cos), parent, threshold, chunk_size)
    stats.add(codes, true_codes)
    return stats.absorption()


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ValueError(f"threshold must be a float, got {threshold!r}")
    if not math.isfinite(threshold) or not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine in [-1, 1], got {threshold!r}")
    return float(threshold)


# --------------------------------------------------------------------------------------------
# one-pass scoring of an SAE
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecoveryReport:
    """All recovery metrics of one SAE on one evaluation set (see :func:`score_sae`)."""

    l0: float
    fve: float
    mse: float
    shrinkage: float
    gamma: float
    dead: int
    n_eval: int
    mmcs_true_to_learned: float
    mmcs_learned_to_true: float
    mcc: float
    uniqueness: float
    precision: float
    recall: float
    f1: float
    absorption: float | None
    absorption_gap: float | None
    hedging: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable) of the fields."""
        return dataclasses.asdict(self)


@torch.no_grad()
def score_sae(
    sae: Any,
    x: torch.Tensor,
    true_codes: torch.Tensor,
    true_dirs: torch.Tensor,
    parent: torch.Tensor | None = None,
    batch_size: int = 4096,
    absorption_threshold: float = DEFAULT_ABSORPTION_THRESHOLD,
    gap_min_samples: int | None = None,
) -> RecoveryReport:
    """Score an SAE against ground truth in one pass over ``x`` in batches.

    Why: one call gives every pinned metric with the same conventions as the stand-alone
    functions here (and as SAELens's ``eval_sae_on_synthetic_data``), without ever holding the
    [n, m] codes in memory.

    ``sae`` is any object with ``encode(x) -> codes [b, m]``, ``decode(codes) -> x̂ [b, d]`` and
    ``W_dec`` of shape [m, d] -- our SAEs or an untouched SAELens ``SAE``.  It is called under
    ``torch.no_grad`` and not otherwise modified (in particular ``.eval()`` is *not* called:
    put it in the mode you want).  Batches of ``x`` are moved to ``sae.device`` / ``sae.dtype``
    when the SAE has those attributes.  ``x`` [n, d] are the activations, ``true_codes`` [n, F]
    the true feature codes, ``true_dirs`` [F, d] the true directions and ``parent`` [F] (int64,
    -1 for roots) the optional hierarchy for :func:`absorption` and the scores of
    :func:`analysis.metrics.hierarchy.absorption_gap` (edges with ``gap_min_samples`` samples per condition,
    by default :data:`~analysis.metrics.hierarchy.DEFAULT_GAP_MIN_SAMPLES`) and
    :func:`~analysis.metrics.hierarchy.hedging` (all three are None without it).  ``dead`` counts latents never non-zero over these
    ``n_eval`` = n samples.
    """

    x = check_tensor("x", x, 2)
    true_codes = check_tensor("true_codes", true_codes, 2)
    _check_nonempty_rows("x", x)
    if true_codes.shape[0] != x.shape[0]:
        raise ValueError(
            f"x has shape {tuple(x.shape)} but true_codes has shape {tuple(true_codes.shape)}; "
            "the number of samples (dim 0) must match"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    for attr in ("encode", "decode", "W_dec"):
        if not hasattr(sae, attr):
            raise ValueError(f"sae must have encode, decode and W_dec; it has no {attr!r}")
    true_dirs, W_dec = _check_dicts(true_dirs, sae.W_dec)
    if true_dirs.shape[1] != x.shape[1]:
        raise ValueError(f"x has shape {tuple(x.shape)} but true_dirs has shape {tuple(true_dirs.shape)}; d must match")
    if true_codes.shape[1] != true_dirs.shape[0]:
        raise ValueError(
            f"true_codes has shape {tuple(true_codes.shape)} ([n, F]) but true_dirs has shape "
            f"{tuple(true_dirs.shape)} ([F, d]); F must match"
        )
    if parent is not None:
        parent = _check_parent(parent, true_dirs.shape[0])
    absorption_threshold = _check_threshold(absorption_threshold)
    gap_min_samples = (
        DEFAULT_GAP_MIN_SAMPLES if gap_min_samples is None else _check_min_samples(gap_min_samples, "gap_min_samples")
    )

    sae_device = getattr(sae, "device", None)
    sae_device = sae_device if isinstance(sae_device, torch.device | str) else None
    sae_dtype = getattr(sae, "dtype", None)
    sae_dtype = sae_dtype if isinstance(sae_dtype, torch.dtype) else None

    m = W_dec.shape[0]
    cos = _cos(true_dirs, W_dec)  # [F, m] on W_dec's device
    match = _latent_match(cos)
    recon = _ReconStats()
    code_stats = _CodeStats(cos, match, parent, absorption_threshold)
    gap_stats = None if parent is None else _GapStats(cos, parent)

    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size]
        xb_in = xb if sae_device is None and sae_dtype is None else xb.to(device=sae_device, dtype=sae_dtype)
        codes = sae.encode(xb_in)
        x_hat = sae.decode(codes)
        if not isinstance(codes, torch.Tensor) or codes.shape != (xb.shape[0], m):
            got = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(
                f"sae.encode(x) must return codes of shape {(xb.shape[0], m)} ([batch, m] with "
                f"m = W_dec.shape[0]), got {got}"
            )
        if not isinstance(x_hat, torch.Tensor) or x_hat.shape != xb.shape:
            got = tuple(x_hat.shape) if isinstance(x_hat, torch.Tensor) else type(x_hat).__name__
            raise ValueError(f"sae.decode(codes) must return shape {tuple(xb.shape)}, got {got}")
        check_tensor("sae.encode(x)", codes, 2)
        check_tensor("sae.decode(codes)", x_hat, 2)
        recon.add(xb.to(x_hat.device), x_hat)
        code_stats.add(codes, true_codes[i : i + batch_size])
        if gap_stats is not None:
            gap_stats.add(codes, true_codes[i : i + batch_size])

    c = code_stats.classification()
    return RecoveryReport(
        l0=code_stats.l0(),
        fve=recon.fve(),
        mse=recon.mse(),
        shrinkage=recon.shrinkage(),
        gamma=recon.gamma(),
        dead=int((~code_stats.fired).sum()),
        n_eval=int(x.shape[0]),
        mmcs_true_to_learned=_mmcs_from_cos(cos, "true_to_learned"),
        mmcs_learned_to_true=_mmcs_from_cos(cos, "learned_to_true"),
        mcc=_mcc_from_cos(cos),
        uniqueness=int(match.unique().numel()) / m,
        precision=c["precision_mean"],
        recall=c["recall_mean"],
        f1=c["f1_mean"],
        absorption=None if parent is None else code_stats.absorption().score,
        absorption_gap=None if gap_stats is None else gap_stats.result(gap_min_samples).score,
        hedging=None if parent is None else _hedging(cos, true_dirs, W_dec, parent).score,
    )
