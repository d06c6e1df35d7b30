"""The properties: each a documented promise, a Hypothesis strategy for its inputs, and a check."""

from __future__ import annotations

import copy
import inspect
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

try:
    from hypothesis import strategies as st
except ImportError as error:  # pragma: no cover - exercised only without the dev extra
    raise ImportError(
        "the SAE conformance suite needs Hypothesis: pip install hypothesis (or groundtruth[dev])"
    ) from error

from analysis.conformance.subject import Subject
from analysis.metrics.recovery import absorption, l0, mcc, mmcs
from groundtruth import Constant, Hierarchy, SparseFeatureConfig, SparseFeatureModel, Uniform
from toymodels.sae.factories import factories

# -- data ---------------------------------------------------------------------------------------------


def gaussian(n: int, d: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def easy_ground_truth(n_features: int, d: int, seed: int) -> torch.Tensor:
    """``n_features`` orthonormal directions in ``d`` dimensions (rows)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, n_features, generator=g, dtype=torch.float64))
    return q.T.float().contiguous()


def one_at_a_time(directions: torch.Tensor, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless batches where each sample is one true direction times a magnitude in [1, 2)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        which = torch.randint(directions.shape[0], (batch,), generator=g)
        yield (1 + torch.rand(batch, 1, generator=g)) * directions[which]


def sparse_data(d: int, n_features: int, seed: int) -> SparseFeatureModel:
    """A fittable sparse source: random unit features, about two active per sample."""
    cfg = SparseFeatureConfig(
        d=d, n_features=n_features, firing=Constant(min(1.0, 2.0 / n_features)), magnitude=Uniform(0.5, 1.5), seed=seed
    )
    return SparseFeatureModel(cfg)


def hierarchical_data(n_features: int, d: int, seed: int) -> SparseFeatureModel:
    """Trees of one parent and three mutually exclusive children over orthonormal directions: the data an
    SAE declared ``built_for="hierarchical"`` (Matryoshka) is checked on. Every feature has firing
    probability 0.2, a child only inside its parent's firings, so about half of a parent's firings carry
    one child; coefficients are uniform on [0, 2). Features left over by ``n_features // 4`` trees fire
    on their own."""
    hierarchy = Hierarchy(n_roots=n_features // 4, branching=3, depth=1, mutually_exclusive=True)
    # Uniform on [0, 2), not [0.5, 1.5): a latent that must reconstruct its parent alone (an early
    # Matryoshka prefix) also takes in its children's mean, less so when coefficients vary more
    # (measured with p = 0.3 and k = 2: Matryoshka's parents at MCC 0.95-0.96 on [0.5, 1.5), 0.97-0.98 on [0, 2)).
    cfg = SparseFeatureConfig(
        d=d,
        n_features=n_features,
        firing=Constant(0.2),
        magnitude=Uniform(0.0, 2.0),
        hierarchy=hierarchy,
        seed=seed,
    )
    return SparseFeatureModel(cfg, directions=easy_ground_truth(n_features, d, seed))


def _mse(subject: Subject, x: torch.Tensor) -> float:
    return float((subject.decode(subject.encode(x)) - x).pow(2).sum(-1).mean())


# -- profiles -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """How hard to look: examples per property and the size of the training runs."""

    name: str
    examples: int  # Hypothesis examples for cheap properties
    training_examples: int  # ... and for properties that train
    sizes: tuple[tuple[int, int], ...]  # (d_in, d_sae) pairs to draw from; d_sae != d_in
    train_steps: int
    recovery_steps: int  # at most this many steps to recover flat features
    hierarchy_steps: int  # steps to recover hierarchical features (the SAE and the BatchTopK it is compared with)
    knob_seeds: int
    lr: float = 1e-2

    def __post_init__(self) -> None:
        for d_in, d_sae in self.sizes:
            # d_sae != d_in keeps latent axes identifiable; d_sae / 2 orthogonal features must fit in d_in,
            # and hold at least one tree of a parent and three children.
            if d_sae == d_in or d_sae // 2 > d_in or d_sae < 8:
                raise ValueError(
                    f"Profile {self.name!r}: size (d_in={d_in}, d_sae={d_sae}) needs 8 <= d_sae != d_in, d_sae / 2 <= d_in"
                )


PROFILES = {
    "fast": Profile("fast", examples=10, training_examples=1, sizes=((16, 32),), train_steps=150,
                    recovery_steps=1600, hierarchy_steps=400, knob_seeds=2),
    "thorough": Profile("thorough", examples=100, training_examples=4, sizes=((16, 32), (24, 40), (32, 64)),
                        train_steps=400, recovery_steps=2000, hierarchy_steps=800, knob_seeds=4),
}  # fmt: skip


# -- properties ---------------------------------------------------------------------------------------
# Each check takes (factory, profile, case) and raises AssertionError with a message; `case` is the
# Hypothesis-drawn dict, so a failure's shrunk counterexample names every input.


def check_shapes_and_dtypes(factory, profile: Profile, case: dict) -> None:
    """encode maps [..., d_in] to [..., d_sae] and decode maps back, keeping float32 and any leading
    batch dimensions: every scorer and every SAELens tool relies on this contract."""
    s = Subject(factory, case["d_in"], case["d_sae"], case["seed"])
    assert tuple(s.W_dec.shape) == (s.d_sae, s.d_in), f"W_dec has shape {tuple(s.W_dec.shape)}"
    lead = tuple(case["leading"])
    x = gaussian(math.prod(lead), s.d_in, case["seed"]).reshape(*lead, s.d_in)
    codes = s.encode(x)
    assert tuple(codes.shape) == (*lead, s.d_sae), f"encode gave shape {tuple(codes.shape)} for input {tuple(x.shape)}"
    assert codes.dtype == x.dtype, f"encode gave {codes.dtype} for {x.dtype} input"
    x_hat = s.decode(codes)
    assert tuple(x_hat.shape) == tuple(x.shape), f"decode gave shape {tuple(x_hat.shape)} for input {tuple(x.shape)}"
    assert x_hat.dtype == x.dtype, f"decode gave {x_hat.dtype} for {x.dtype} input"


def check_finite_on_extreme_inputs(factory, profile: Profile, case: dict) -> None:
    """decode(encode(x)) stays finite for zeros, tiny and huge inputs: activations span many orders
    of magnitude, and one NaN poisons every metric downstream."""
    s = Subject(factory, case["d_in"], case["d_sae"], case["seed"])
    x = gaussian(4, s.d_in, case["seed"], case["scale"])
    codes = s.encode(x)
    assert torch.isfinite(codes).all(), f"non-finite codes at input scale {case['scale']:g}"
    assert torch.isfinite(s.decode(codes)).all(), f"non-finite reconstruction at input scale {case['scale']:g}"


def check_nonnegative_codes(factory, profile: Profile, case: dict) -> None:
    """ReLU-family SAEs promise non-negative codes; a negative code means an activation was skipped
    and breaks firing statistics, which count codes > 0."""
    s = Subject(factory, case["d_in"], case["d_sae"], case["seed"])
    codes = s.encode(gaussian(16, s.d_in, case["seed"], case["scale"]))
    assert float(codes.min()) >= 0, f"a code is {float(codes.min()):.4g} < 0"


def check_declared_sparsity(factory, profile: Profile, case: dict) -> None:
    """The declared sparsity mechanism is what runs: TopK keeps at most k latents (exactly k when
    enough are positive), BatchTopK keeps k per sample on average over a training batch, a
    threshold (JumpReLU, BatchTopK at inference) zeroes every code at or below it, and matching
    pursuit keeps at most k latents and reconstructs no worse than the empty code. An off-by-one k,
    a threshold that is never applied or a pursuit step of the wrong sign changes L0 or the error
    without any error."""
    s = Subject(factory, case["d_in"], case["d_sae"], case["seed"])
    d = s.declared
    x = gaussian(32, s.d_in, case["seed"], case["scale"])
    codes = s.encode(x)
    nonzero = (codes != 0).sum(-1)
    if d.sparsity in ("topk", "pursuit"):
        assert int(nonzero.max()) <= d.k, f"a sample has {int(nonzero.max())} active latents, k={d.k}"
    if d.sparsity == "topk":
        exact = float((nonzero == d.k).float().mean())
        assert exact >= 0.5, f"only {exact:.0%} of samples have exactly k={d.k} active latents"
    if d.sparsity == "pursuit":
        # Each greedy step removes the residual's component along a unit row, so no step adds error.
        empty = (s.decode(torch.zeros_like(codes)) - x).norm(dim=-1)
        error = (s.decode(codes) - x).norm(dim=-1)
        worse = error > empty * (1 + 1e-5) + 1e-6 * case["scale"]
        assert not bool(worse.any()), (
            f"{int(worse.sum())} reconstructions are worse than the empty code's "
            f"(e.g. error {float(error[worse][0]):.4g} against {float(empty[worse][0]):.4g})"
        )
    if d.sparsity in ("threshold", "batchtopk"):
        threshold = getattr(s.sae, "threshold", None)
        assert isinstance(threshold, torch.Tensor), "a threshold SAE must expose its threshold tensor"
        below = (codes != 0) & (codes.abs() <= threshold.detach().expand(codes.shape[-1]))
        assert not bool(below.any()), (
            f"{int(below.sum())} codes are non-zero but not above their threshold (e.g. {float(codes[below][0]):.4g})"
        )
    if d.sparsity == "batchtopk" and s.trainable:
        out = s.train_step(x, lr=profile.lr)
        train_codes = getattr(out, "codes", None)
        if isinstance(out, dict):
            train_codes = out.get("codes")
        if isinstance(train_codes, torch.Tensor):
            mean_l0 = float((train_codes != 0).sum(-1).float().mean())
            assert abs(mean_l0 - d.k) < 1e-9, f"training batch mean L0 is {mean_l0:.4g}, k={d.k}"


def check_decoder_norm_policy(factory, profile: Profile, case: dict) -> None:
    """A unit-norm decoder stays unit-norm through training: the L1 penalty is only meaningful
    against fixed row norms, and metrics that read W_dec assume them."""
    s = Subject(factory, case["d_in"], case["d_sae"], case["seed"])
    norms = s.W_dec.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), f"initial row norms span {_span(norms)}"
    if s.trainable:
        data = sparse_data(s.d_in, s.d_sae // 2, case["seed"]).activations(64, seed=case["seed"])
        s.train(data, case["steps"], lr=case["lr"])
        norms = s.W_dec.norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4), (
            f"after {case['steps']} steps at lr {case['lr']:g} the row norms span {_span(norms)}"
        )


def _span(norms: torch.Tensor) -> str:
    return f"[{float(norms.min()):.6f}, {float(norms.max()):.6f}]"


def permuted(sae: torch.nn.Module, perm: torch.Tensor, d_sae: int) -> torch.nn.Module:
    """A copy of ``sae`` with latent ``i`` moved to position ``j`` where ``perm[j] = i``: every parameter
    and buffer axis of length ``d_sae`` is re-indexed."""
    other = copy.deepcopy(sae)
    with torch.no_grad():
        for tensor in [*other.parameters(), *other.buffers()]:
            for axis, size in enumerate(tensor.shape):
                if size == d_sae:
                    tensor.copy_(tensor.index_select(axis, perm))
    return other


def check_latent_permutation_equivariance(factory, profile: Profile, case: dict) -> None:
    """Relabelling latents relabels codes and changes nothing else: reconstructions and recovery
    metrics are unchanged. Code that treats latent positions specially (a stale per-latent buffer,
    a slice that assumes an order) breaks this."""
    s = Subject(factory, case["d_in"], case["d_sae"], case["seed"])
    perm = torch.randperm(s.d_sae, generator=torch.Generator().manual_seed(case["perm_seed"]))
    other = permuted(s.sae, perm, s.d_sae)
    other.eval()
    x = gaussian(16, s.d_in, case["seed"])
    codes = s.encode(x)
    with torch.no_grad():
        codes_p = other.encode(x)
        x_hat_p = other.decode(codes_p)
    x_hat = s.decode(codes)
    # Summation order changes with the permutation: compare up to float32 rounding at the data's scale.
    for got, want, what in (
        (codes_p, codes[:, perm], "codes are not permuted with latents"),
        (x_hat_p, x_hat, "reconstruction changed"),
    ):
        atol = 1e-5 * float(want.abs().max().clamp(min=1.0))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=atol, msg=what)
    truth = easy_ground_truth(min(s.d_in, 8), s.d_in, case["perm_seed"])
    for name, metric in (("MCC", mcc), ("MMCS", lambda t, w: mmcs(t, w, "true_to_learned"))):
        a, b = metric(truth, s.W_dec), metric(truth, other.W_dec.detach())
        assert abs(a - b) < 1e-6, f"{name} changed from {a:.6f} to {b:.6f} under a latent permutation"


def check_deterministic_under_seed(factory, profile: Profile, case: dict) -> None:
    """The same seed gives the same SAE and the same training trajectory; another seed gives another
    SAE. Without this no experiment can be repeated or compared across variants."""
    a = Subject(factory, case["d_in"], case["d_sae"], case["seed"])
    b = Subject(factory, case["d_in"], case["d_sae"], case["seed"])
    assert torch.equal(a.W_dec, b.W_dec), "two SAEs from the same seed have different decoders"
    x = gaussian(16, a.d_in, case["seed"])
    assert torch.equal(a.encode(x), b.encode(x)), "two SAEs from the same seed encode differently"
    c = Subject(factory, case["d_in"], case["d_sae"], case["seed"] + 1)
    assert not torch.equal(a.W_dec, c.W_dec), "seeds seed + 0 and seed + 1 give the same decoder: the seed is ignored"
    if a.trainable:
        for step in range(3):
            batch = gaussian(32, a.d_in, case["seed"] + 100 + step)
            a.train_step(batch, lr=profile.lr)
            b.train_step(batch, lr=profile.lr)
        assert torch.equal(a.W_dec, b.W_dec), "the same seed and batches trained to different decoders"


def check_save_load_round_trip(factory, profile: Profile, case: dict) -> None:
    """Saving and loading gives back the same function, bit for bit: results computed from a saved
    SAE must be the results of the trained one."""
    s = Subject(factory, case["d_in"], case["d_sae"], case["seed"])
    if s.trainable:  # round-trip a trained SAE, whose parameters have moved off their initial values
        s.train(sparse_data(s.d_in, s.d_sae // 2, case["seed"]).activations(64, seed=case["seed"]), 5, lr=profile.lr)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = s.round_trip(Path(tmp) / "sae")
    if isinstance(loaded, torch.nn.Module):
        loaded.eval()
    x = gaussian(16, s.d_in, case["seed"])
    codes = gaussian(s.d_sae, s.d_sae, case["seed"] + 1).abs()  # every latent, so every decoder row
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), s.encode(x)), "codes changed in the round trip"
        assert torch.equal(loaded.decode(codes), s.decode(codes)), "the decoder changed in the round trip"


def check_training_reduces_loss(factory, profile: Profile, case: dict) -> None:
    """Training on data the SAE can represent (fewer features than latents) at least halves the
    held-out reconstruction error: a sign error in an auxiliary loss or a broken gradient path shows
    up here first."""
    s = Subject(factory, case["d_in"], case["d_sae"], case["seed"])
    model = sparse_data(s.d_in, s.d_sae // 2, case["seed"])
    held_out = model.eval_set(512).x
    before = _mse(s, held_out)
    s.train(model.activations(64, seed=case["seed"]), profile.train_steps, lr=profile.lr)
    after = _mse(s, held_out)
    assert math.isfinite(after), f"held-out MSE is {after} after {profile.train_steps} steps"
    assert after <= 0.5 * before, f"held-out MSE went from {before:.4g} to {after:.4g} in {profile.train_steps} steps"


def check_recovers_easy_ground_truth(factory, profile: Profile, case: dict) -> None:
    """An SAE finds every feature of easy data of the kind it is built for (``Declared.built_for``): an SAE
    that fails this will not find features in anything harder. Flat: orthogonal features active one at
    a time, an SAE with twice as many latents as features reaches MCC >= 0.99 within a bounded number of
    steps (a TopK-style SAE built with k = 1, the true L0). Hierarchical: orthogonal parents with
    mutually exclusive children, at k = the true L0 rounded down, it recovers parents and children (MCC
    >= 0.95 each) and absorbs parents into children less than BatchTopK at the same k on the same data."""
    s = Subject(factory, case["d_in"], case["d_sae"], case["seed"])
    if s.declared.built_for == "hierarchical":
        _recovers_hierarchy(s, profile, case)
    else:
        _recovers_flat(s, profile, case)


def _recovers_flat(s: Subject, profile: Profile, case: dict) -> None:
    if s.declared.knob == "k" and s.accepts("k"):  # train at the true sparsity: one feature per sample
        s = Subject(s.factory, case["d_in"], case["d_sae"], case["seed"], k=1)
    truth = easy_ground_truth(s.d_sae // 2, s.d_in, case["seed"]) if s.d_sae // 2 <= s.d_in else None
    assert truth is not None, f"profile sizes need d_sae / 2 <= d_in, got {s.d_in}, {s.d_sae}"
    data = one_at_a_time(truth, 64, case["seed"])
    score, done = 0.0, 0
    while done < profile.recovery_steps:
        chunk = min(200, profile.recovery_steps - done)
        for _ in range(chunk):
            s.train_step(next(data), lr=profile.lr, total_steps=profile.recovery_steps)
        done += chunk
        score = mcc(truth, s.W_dec)
        if score >= 0.99:
            return
    raise AssertionError(f"MCC {score:.4f} < 0.99 after {done} steps")


def _recovers_hierarchy(s: Subject, profile: Profile, case: dict) -> None:
    d_in, d_sae, seed = case["d_in"], case["d_sae"], case["seed"]
    model = hierarchical_data(d_sae // 2, d_in, seed)
    held_out = model.eval_set(2048)
    x, true_codes = held_out.x, held_out.codes.to_dense()
    # Below the true L0 a parent and its child cannot always both fire: BatchTopK then saves latents by
    # folding the parent into its children's latents (absorption), which a hierarchical SAE must not do.
    k = max(1, int(l0(true_codes)))
    tuned = s.declared.knob == "k" and s.accepts("k")
    if tuned:
        s = Subject(s.factory, d_in, d_sae, seed, k=k)
    s.train(model.activations(64, seed=seed), profile.hierarchy_steps, lr=profile.lr)
    if not tuned:  # compared at the k it declares, or at its L0 if it has none
        k = s.declared.k or max(1, round(l0(s.encode(x))))
    reference = Subject(factories()["batchtopk"], d_in, d_sae, seed, k=k)
    reference.train(model.activations(64, seed=seed), profile.hierarchy_steps, lr=profile.lr)
    parent = model.parent
    is_parent = torch.zeros_like(parent, dtype=torch.bool).index_fill_(0, parent[parent >= 0], True)
    for group, members in (("parents", is_parent), ("children", parent >= 0)):
        score = mcc(model.directions[members], s.W_dec)
        assert score >= 0.95, f"MCC {score:.4f} < 0.95 on the {group} after {profile.hierarchy_steps} steps"
    absorbed = {
        name: absorption(sae.encode(x), true_codes, model.directions, sae.W_dec, parent).score
        for name, sae in (("sae", s), ("batchtopk", reference))
    }
    assert absorbed["sae"] < absorbed["batchtopk"], (
        f"absorption {absorbed['sae']:.3f} is not below BatchTopK's {absorbed['batchtopk']:.3f} at k={k}"
    )


def check_dead_latents_revived(factory, profile: Profile, case: dict) -> None:
    """A latent that never fires is resampled within the declared number of steps and then fires
    again. Resampling that writes into a copy of the weights runs without error and revives nothing."""
    s = Subject(factory, case["d_in"], case["d_sae"], case["seed"])
    b_enc = getattr(s.sae, "b_enc", None)
    assert isinstance(b_enc, torch.Tensor), "reviving latents is checked by killing them through b_enc"
    killed = torch.randperm(s.d_sae, generator=torch.Generator().manual_seed(case["seed"]))[: s.d_sae // 4]
    with torch.no_grad():
        b_enc[killed] = -1e4
    truth = easy_ground_truth(s.d_sae // 2, s.d_in, case["seed"])
    s.train(one_at_a_time(truth, 64, case["seed"]), s.declared.revives_dead_within + 1, lr=profile.lr)
    fired = (s.encode(next(one_at_a_time(truth, 1024, case["seed"] + 1))) > 0).any(0)
    revived = float(fired[killed].float().mean())
    assert revived >= 0.5, (
        f"{revived:.0%} of {killed.numel()} killed latents fire again after {s.declared.revives_dead_within + 1} steps"
    )


def check_monotone_sparsity_knob(factory, profile: Profile, case: dict) -> None:
    """Turning the sparsity knob moves L0 the declared way, on average over seeds: larger k, larger
    L0; larger penalty, smaller L0. A penalty that is computed but never reaches the loss fails."""
    probe = Subject(factory, case["d_in"], case["d_sae"], case["seed"])
    knob = probe.declared.knob
    current = getattr(getattr(probe.sae, "cfg", None), knob, None)
    if knob == "k":
        current = current or probe.declared.k
        low, high = max(1, (current or 4) // 2), min(probe.d_sae, 2 * (current or 4))
    else:
        base = float(current) if current else 1.0
        low, high = base / 4, base * 4
    model = sparse_data(probe.d_in, probe.d_sae // 2, case["seed"])
    held_out = model.eval_set(512).x
    l0s = {}
    for value in (low, high):
        runs = []
        for i in range(profile.knob_seeds):
            s = Subject(factory, probe.d_in, probe.d_sae, case["seed"] + i, **{knob: value})
            s.train(model.activations(64, seed=case["seed"] + i), profile.train_steps, lr=profile.lr)
            runs.append(l0(s.encode(held_out)))
        l0s[value] = sum(runs) / len(runs)
    rises = l0s[high] > l0s[low]
    assert rises == probe.declared.knob_raises_l0, (
        f"{knob}={low:g} gives mean L0 {l0s[low]:.3f}, {knob}={high:g} gives {l0s[high]:.3f}; "
        f"expected L0 to {'rise' if probe.declared.knob_raises_l0 else 'fall'}"
    )


# -- the registry ---------------------------------------------------------------------------------------


_SCALES = st.sampled_from([1.0, 1e-2, 10.0, 1e-4, 100.0])
_EXTREMES = st.sampled_from([0.0, 1e-30, 1e-8, 1e8, 1e15])
_LEADING = st.lists(st.integers(1, 5), min_size=1, max_size=3)  # leading batch dimensions
_STEPS = st.integers(1, 8)
_LRS = st.sampled_from([1e-3, 1e-2, 1e-1])
_SEED = st.integers(0, 2**16)


def _cases(profile: Profile, **extra):
    """A strategy of dicts: sizes and a seed, plus ``extra`` strategies."""
    return st.sampled_from(profile.sizes).flatmap(
        lambda size: st.fixed_dictionaries(
            {"d_in": st.just(size[0]), "d_sae": st.just(size[1]), "seed": _SEED, **extra}
        )
    )


@dataclass(frozen=True)
class Property:
    """One checked promise: ``check`` raises AssertionError on a counterexample; ``needs`` says when it
    applies (a reason to skip, or None); ``training`` marks the expensive ones."""

    name: str
    check: Callable[[Any, Profile, dict], None]
    cases: Callable[[Profile], Any]
    needs: Callable[[Subject], str | None] = lambda s: None
    training: bool = False

    @property
    def why(self) -> str:
        return " ".join(inspect.getdoc(self.check).split())


def _needs_training(s: Subject) -> str | None:
    return None if s.trainable else "no training step"


def _needs_training_and_knob(s: Subject) -> str | None:
    if not s.trainable:
        return "no training step"
    if s.declared.knob is None:
        return "no sparsity knob declared"
    if not s.accepts(s.declared.knob):
        return f"the factory takes no {s.declared.knob!r} keyword"
    return None


PROPERTIES: tuple[Property, ...] = (
    Property("shapes_and_dtypes", check_shapes_and_dtypes, lambda p: _cases(p, leading=_LEADING)),
    Property("finite_on_extreme_inputs", check_finite_on_extreme_inputs, lambda p: _cases(p, scale=_EXTREMES)),
    Property(
        "nonnegative_codes",
        check_nonnegative_codes,
        lambda p: _cases(p, scale=_SCALES),
        needs=lambda s: None if s.declared.nonnegative else "non-negative codes not declared",
    ),
    Property(
        "declared_sparsity",
        check_declared_sparsity,
        lambda p: _cases(p, scale=_SCALES),
        needs=lambda s: None if s.declared.sparsity else "no sparsity mechanism declared",
    ),
    Property(
        "decoder_norm_policy",
        check_decoder_norm_policy,
        lambda p: _cases(p, steps=_STEPS, lr=_LRS),
        needs=lambda s: None if s.declared.decoder_norm == "unit" else "no unit-norm decoder declared",
    ),
    Property(
        "latent_permutation_equivariance",
        check_latent_permutation_equivariance,
        lambda p: _cases(p, perm_seed=_SEED),
        needs=lambda s: None if isinstance(s.sae, torch.nn.Module) else "not a torch.nn.Module: cannot permute",
    ),
    Property("deterministic_under_seed", check_deterministic_under_seed, lambda p: _cases(p)),
    Property(
        "save_load_round_trip",
        check_save_load_round_trip,
        lambda p: _cases(p),
        needs=lambda s: None if s.savable else "no save/load methods",
    ),
    Property("training_reduces_loss", check_training_reduces_loss, _cases, needs=_needs_training, training=True),
    Property(
        "recovers_easy_ground_truth",
        check_recovers_easy_ground_truth,
        _cases,
        needs=_needs_training,
        training=True,
    ),
    Property(
        "dead_latents_revived",
        check_dead_latents_revived,
        _cases,
        needs=lambda s: (
            _needs_training(s) or (None if s.declared.revives_dead_within else "no dead-latent resampling declared")
        ),
        training=True,
    ),
    Property(
        "monotone_sparsity_knob",
        check_monotone_sparsity_knob,
        _cases,
        needs=_needs_training_and_knob,
        training=True,
    ),
)
