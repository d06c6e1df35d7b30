"""Downstream metrics of an SAE spliced into a model: how much of the model's loss survives when an activation
is replaced by the SAE's reconstruction of it.

SAEBench's core evaluation (Karvonen et al. 2025, ``sae_bench/evals/core/main.py``) and SAELens's
``evals.py`` (``get_downstream_reconstruction_metrics``) report, per token and then averaged:

* ``ce_loss_without_sae``, ``ce_loss_with_sae``, ``ce_loss_with_ablation``: the next-token cross-entropy of
  the clean model, with the SAE spliced in, and with the hook zero-ablated;
* ``ce_loss_score = (ce_loss_with_ablation - ce_loss_with_sae) / (ce_loss_with_ablation - ce_loss_without_sae)``,
  the "CE loss recovered" (1 for a perfect reconstruction, 0 for one no better than zeros);
* ``kl_div_with_sae``, ``kl_div_with_ablation``: KL(clean ‖ spliced) of the next-token distributions, and
  ``kl_div_score = (kl_div_with_ablation - kl_div_with_sae) / kl_div_with_ablation``.

Both codes ablate with zeros only. We add mean-ablation, named ``..._mean_ablation``: the hook's activation
replaced by its mean over the given sequences *at each position* (the models here learn position embeddings,
so a position's mean keeps what the position alone tells and removes what the tokens tell). The same scores
against it say how much of the token-dependent information the reconstruction keeps.

Positions: the model reads ``tokens[:, :-1]`` and each position is scored against the next token (the
training convention of :func:`toymodels.transformer.train_transformer`); CE and KL are averaged over the same
positions, those whose next token is not ``pad`` (a game's padding after its end, as
:func:`analysis.experiments.games.next_move_scores` counts real moves only). SAEBench also averages the KL at
the last position, which has no next token; that is the one difference.

For hidden-Markov models, :func:`spliced_belief_r2` regresses the exact beliefs from each later layer of the
spliced run (as :mod:`analysis.metrics.beliefs` does for the clean one). For the toy model of superposition,
:func:`toy_splice_scores` gives the same "loss recovered" with the toy's importance-weighted loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from analysis.metrics._inputs import _acc_dtype
from analysis.metrics.beliefs import belief_regression
from groundtruth.checks import check_int, check_tensor
from toymodels.splice import output_kl, reconstruction_hook
from toymodels.superposition import ToyModel, importances
from toymodels.transformer import HookedTransformer, HookPoint, next_token_loss

__all__ = ["loss_recovered", "spliced_belief_r2", "splice_scores", "toy_splice_scores"]

_RUNS = ("sae", "ablation", "mean_ablation")


def loss_recovered(clean: float, spliced: float, ablated: float) -> float:
    """``(ablated - spliced) / (ablated - clean)``: SAEBench's ``ce_loss_score`` (and, with ``clean`` = 0 and
    KLs for losses, its ``kl_div_score``). NaN when ablating costs nothing, where no fraction is defined."""
    gap = ablated - clean
    return (ablated - spliced) / gap if gap != 0 else math.nan


def _check_model_and_sae(model, sae, kind: type) -> None:
    if not isinstance(model, kind):
        raise TypeError(f"model must be a {kind.__name__}, got {type(model).__name__}")
    reconstruction_hook(sae)  # checks encode and decode
    device = next(model.parameters()).device
    w_dec = getattr(sae, "W_dec", None)
    if isinstance(w_dec, torch.Tensor) and w_dec.device != device:
        raise ValueError(f"sae must be on the model's device {device}, got {w_dec.device}")


def _check_tokens(model: HookedTransformer, tokens, min_len: int, max_len: int) -> torch.Tensor:
    tokens = check_tensor("tokens", tokens, 2)
    if tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must be integer token ids, got dtype {tokens.dtype}")
    if not min_len <= tokens.shape[1] <= max_len or len(tokens) == 0:
        raise ValueError(f"tokens must be [b >= 1, {min_len} <= t <= {max_len}], got shape {tuple(tokens.shape)}")
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= model.cfg.d_vocab:
        raise ValueError(f"tokens must lie in [0, d_vocab={model.cfg.d_vocab}), got values in [{low}, {high}]")
    return tokens


def _check_hook(model: HookedTransformer, hook: str) -> None:
    if hook not in model.cfg.sae_hook_names:
        raise ValueError(
            f"hook must be a per-position hook of the model, one of {model.cfg.sae_hook_names}, got {hook!r}"
        )


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    return (slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size))


@torch.no_grad()
def _position_mean(
    model: HookedTransformer, inputs: torch.Tensor, counted: torch.Tensor, hook: str, batch_size: int
) -> torch.Tensor:
    """The activation at ``hook`` averaged over the counted sequences at each position, ``[t, d]`` (zero
    where no sequence counts: such a position and all after it count nowhere, so its value matters nowhere)."""
    total = count = None
    for rows in _batches(len(inputs), batch_size):
        act = model.run_with_cache(inputs[rows].to(model.device), names=[hook])[1][hook]
        weight = counted[rows].to(model.device, _acc_dtype(model.device))[..., None]
        part = (act.to(weight.dtype) * weight).sum(0)
        total = part if total is None else total + part
        count = weight.sum(0) if count is None else count + weight.sum(0)
    return (total / count.clamp(min=1)).to(act.dtype)


@torch.no_grad()
def splice_scores(
    model: HookedTransformer, sae, tokens: torch.Tensor, hook: str, *, batch_size: int = 256, pad: int | None = None
) -> dict[str, float]:
    """SAEBench's downstream scores of ``sae`` spliced in at ``hook`` of ``model`` over ``tokens [b, t]``, plus
    the same against mean-ablation (see the module's docstring for the definitions and positions).

    Returns ``ce_loss_without_sae``, ``ce_loss_with_sae``, ``ce_loss_with_ablation`` (zeros),
    ``ce_loss_with_mean_ablation``, ``ce_loss_score``, ``ce_loss_score_mean_ablation``, ``kl_div_with_sae``,
    ``kl_div_with_ablation``, ``kl_div_with_mean_ablation``, ``kl_div_score``, ``kl_div_score_mean_ablation``
    (nats, means over the scored positions) and ``n_positions``. The model reads ``batch_size`` sequences at
    a time (memory stays bounded whatever ``b``); ``sae`` is any object with ``encode`` and ``decode`` on the
    model's device. Positions whose next token is ``pad`` are not scored (None: all are)."""
    _check_model_and_sae(model, sae, HookedTransformer)
    tokens = _check_tokens(model, tokens, 2, model.cfg.n_ctx + 1)
    _check_hook(model, hook)
    check_int("batch_size", batch_size)
    if pad is not None:
        check_int("pad", pad, 0, model.cfg.d_vocab - 1)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    counted = targets != pad if pad is not None else torch.ones_like(targets, dtype=torch.bool)
    n = int(counted.sum())
    if n == 0:
        raise ValueError(f"tokens have no position whose next token is not pad={pad}: nothing to score")
    mean = _position_mean(model, inputs, counted, hook, batch_size)
    replace: dict[str, Callable[[torch.Tensor, HookPoint], torch.Tensor]] = {
        "sae": reconstruction_hook(sae),
        "ablation": lambda act, _: torch.zeros_like(act),
        "mean_ablation": lambda act, _: mean.expand_as(act),
    }
    ce = dict.fromkeys(("clean", *_RUNS), 0.0)
    kl = dict.fromkeys(_RUNS, 0.0)
    for rows in _batches(len(inputs), batch_size):
        keep = counted[rows].to(model.device)
        k = int(keep.sum())
        if k == 0:
            continue
        x, y = inputs[rows].to(model.device), targets[rows].to(model.device)[keep][None]
        clean = model(x)[keep]
        ce["clean"] += float(next_token_loss(clean[None], y)) * k
        for name, fn in replace.items():
            logits = model.run_with_hooks(x, fwd_hooks=[(hook, fn)])[keep]
            ce[name] += float(next_token_loss(logits[None], y)) * k
            kl[name] += float(output_kl(clean, logits)) * k
    ce, kl = {name: v / n for name, v in ce.items()}, {name: v / n for name, v in kl.items()}
    return {
        "ce_loss_without_sae": ce["clean"],
        "ce_loss_with_sae": ce["sae"],
        "ce_loss_with_ablation": ce["ablation"],
        "ce_loss_with_mean_ablation": ce["mean_ablation"],
        "ce_loss_score": loss_recovered(ce["clean"], ce["sae"], ce["ablation"]),
        "ce_loss_score_mean_ablation": loss_recovered(ce["clean"], ce["sae"], ce["mean_ablation"]),
        "kl_div_with_sae": kl["sae"],
        "kl_div_with_ablation": kl["ablation"],
        "kl_div_with_mean_ablation": kl["mean_ablation"],
        "kl_div_score": loss_recovered(0.0, kl["sae"], kl["ablation"]),
        "kl_div_score_mean_ablation": loss_recovered(0.0, kl["sae"], kl["mean_ablation"]),
        "n_positions": n,
    }


@torch.no_grad()
def spliced_belief_r2(
    model: HookedTransformer,
    sae,
    tokens: torch.Tensor,
    beliefs: torch.Tensor,
    hook: str,
    *,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """For each ``blocks.{l}.hook_resid_post`` after ``hook`` (later in the forward pass), the held-out R² of
    the exact beliefs ``[b, t, S]`` regressed from it in the clean run and with ``sae`` spliced in at ``hook``
    (:func:`analysis.metrics.beliefs.belief_regression`, the same sequence split for both):
    ``{hook name: {"clean": r2, "spliced": r2}}``, empty when no later layer exists. Where the model still
    carries the beliefs after the splice, the reconstruction kept what the later layers read of them."""
    _check_model_and_sae(model, sae, HookedTransformer)
    tokens = _check_tokens(model, tokens, 1, model.cfg.n_ctx)
    _check_hook(model, hook)
    check_int("batch_size", batch_size)
    beliefs = check_tensor("beliefs", beliefs, 3)
    if beliefs.shape[:2] != tokens.shape:
        raise ValueError(
            f"beliefs must be [b, t, S] with tokens' [b, t] = {tuple(tokens.shape)}, got {tuple(beliefs.shape)}"
        )
    position = model.hook_names.index(hook)
    later = [name for name in model.hook_names[position + 1 :] if name.endswith("hook_resid_post")]
    if not later:
        return {}
    acts: dict[str, dict[str, list[torch.Tensor]]] = {run: {name: [] for name in later} for run in ("clean", "spliced")}
    splice = reconstruction_hook(sae)
    for rows in _batches(len(tokens), batch_size):
        x = tokens[rows].to(model.device)
        for run, hooks in (("clean", []), ("spliced", [(hook, splice)])):
            cache = model.run_with_cache(x, later, fwd_hooks=hooks)[1]
            for name in later:
                acts[run][name].append(cache[name].float().cpu())
    return {
        name: {run: belief_regression(torch.cat(acts[run][name]), beliefs, seed=seed).r2 for run in acts}
        for name in later
    }


@torch.no_grad()
def toy_splice_scores(model: ToyModel, sae, features: torch.Tensor, *, batch_size: int = 65_536) -> dict[str, float]:
    """The "loss recovered" of ``sae`` spliced into the toy model's hidden layer: the toy's own loss (the mean
    over samples of ``Σ_i I_i (x_i - x'_i)²``, the importance-weighted error it was trained on) with ``x'`` from
    :meth:`ToyModel.output` of the hidden activations (``loss_without_sae``), of the SAE's reconstruction of
    them (``loss_with_sae``), of zeros (``loss_with_ablation``) and of their mean over ``features``
    (``loss_with_mean_ablation``), and :func:`loss_recovered` against both ablations (``loss_score``,
    ``loss_score_mean_ablation``). ``features [n, F]`` are the toy's inputs, e.g. a held-out set's true codes."""
    _check_model_and_sae(model, sae, ToyModel)
    device = model.W.device
    features = check_tensor("features", features, 2)
    if len(features) == 0 or features.shape[1] != model.config.n_features:
        raise ValueError(
            f"features must be [n >= 1, n_features={model.config.n_features}], got {tuple(features.shape)}"
        )
    check_int("batch_size", batch_size)
    weights = importances(model.config).to(device, _acc_dtype(device))
    mean = sum(
        model.hidden(features[rows].to(device)).to(weights.dtype).sum(0) for rows in _batches(len(features), batch_size)
    )
    mean = (mean / len(features)).to(model.W.dtype)
    replace = {
        "clean": lambda h: h,
        "sae": lambda h: sae.decode(sae.encode(h)).to(h.dtype),
        "ablation": torch.zeros_like,
        "mean_ablation": lambda h: mean.expand_as(h),
    }
    loss = dict.fromkeys(replace, 0.0)
    for rows in _batches(len(features), batch_size):
        x = features[rows].to(device)
        h = model.hidden(x)
        for name, fn in replace.items():
            loss[name] += float(((x - model.output(fn(h))).to(weights.dtype) ** 2 @ weights).sum())
    loss = {name: v / len(features) for name, v in loss.items()}
    return {
        "loss_without_sae": loss["clean"],
        "loss_with_sae": loss["sae"],
        "loss_with_ablation": loss["ablation"],
        "loss_with_mean_ablation": loss["mean_ablation"],
        "loss_score": loss_recovered(loss["clean"], loss["sae"], loss["ablation"]),
        "loss_score_mean_ablation": loss_recovered(loss["clean"], loss["sae"], loss["mean_ablation"]),
    }
