"""`groundtruth beliefs`: train a small transformer on a process and find its beliefs in the residual stream.

Reproduces Shai et al. (2024), "Transformers represent belief state geometry in their residual
stream": train on a process from the zoo, regress the exact belief after every token from each hook
(and from all layers concatenated, and from an SAE's codes), and compare with a shuffled-target
baseline and with the same architecture at random initialisation. Weight snapshots taken during
training show the geometry emerging. Everything lands in one folder: the model, ``results.json``
and the figures; a second run with the same config loads the trained model instead of training.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from analysis.experiments.activations import activations, sae_codes
from analysis.experiments.runs import open_run
from analysis.experiments.skeleton import sae_on_cached, trained_model
from analysis.metrics.beliefs import (
    BeliefData,
    Fit,
    belief_data,
    belief_regression,
    distance_agreement,
    expected_loss,
    subset,
)
from groundtruth.atomic import write_text_atomic
from groundtruth.checks import check_int, check_real
from groundtruth.config import Config
from groundtruth.devices import resolve_device
from groundtruth.entropy import optimal_loss
from groundtruth.processes import PROCESSES, process
from toymodels.sae import SAEConfig
from toymodels.training import TrainConfig, snapshots
from toymodels.transformer import (
    HookedTransformer,
    TransformerConfig,
)

logger = logging.getLogger(__name__)

EMERGENCE_SEQUENCES = 8192

# Model sizes by name. "paper" is Shai et al.'s Mess3 model (App. A): 4 layers, d_model 64, 1 head, d_mlp 256.
MODELS: dict[str, dict[str, int]] = {
    "paper": {"n_layers": 4, "d_model": 64, "n_heads": 1, "d_mlp": 256},
    "small": {"n_layers": 2, "d_model": 32, "n_heads": 1, "d_mlp": 128},
    "tiny": {"n_layers": 1, "d_model": 16, "n_heads": 1, "d_mlp": 32},
}


@dataclass(frozen=True)
class BeliefConfig(Config):
    """One belief-geometry experiment; the JSON of this config identifies its output folder."""

    process: str = "mess3"
    model: str = "paper"
    n_ctx: int = 10
    steps: int = 2000
    batch_size: int = 512
    lr: float = 1e-3
    soft: bool = False  # train on the exact next-token distributions instead of sampled tokens
    snapshots: int = 8  # weight snapshots kept during training, for the emergence figure
    shuffles: int = 100  # shuffled-target permutations for the baseline
    sae_width: int = 0  # > 0: also train a TopK SAE of this width on the final layer and regress its codes
    sae_k: int = 4
    max_sequences: int = 100_000  # score on every sequence if there are at most this many, else a sample
    seed: int = 0

    def __post_init__(self) -> None:
        if self.process not in PROCESSES:
            raise ValueError(f"process must be one of {sorted(PROCESSES)}, got {self.process!r}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {self.model!r}")
        for name in ("n_ctx", "steps", "batch_size", "max_sequences"):
            check_int(name, getattr(self, name))
        for name in ("snapshots", "shuffles", "sae_width", "seed"):
            check_int(name, getattr(self, name), minimum=0)
        check_int("sae_k", self.sae_k)
        check_real("lr", self.lr, 0.0, low_open=True)

    def transformer(self, d_vocab: int) -> TransformerConfig:
        return TransformerConfig(**MODELS[self.model], n_ctx=self.n_ctx, d_vocab=d_vocab, seed=self.seed)

    def model_identity(self) -> dict:
        """What identifies the run folder: the config and its training recipe."""
        return {**asdict(self), "train": self.train().identity()}

    def train(self) -> TrainConfig:
        every = max(1, self.steps // self.snapshots) if self.snapshots else 0
        return TrainConfig(
            steps=self.steps,
            lr=self.lr,
            warmup_steps=min(100, self.steps // 10),
            checkpoint_every=max(1, self.steps // 10),
            snapshot_every=every,
        )


def hook_names(cfg: TransformerConfig) -> list[str]:
    """The hooks scored: the embedding (resid_pre of block 0), every block's resid_post, ln_final."""
    return (
        ["blocks.0.hook_resid_pre"]
        + [f"blocks.{layer}.hook_resid_post" for layer in range(cfg.n_layers)]
        + ["ln_final.hook_normalized"]
    )


def final_hook(cfg: TransformerConfig) -> str:
    """The last block's resid_post: "the final layer" of Shai et al.'s regressions."""
    return f"blocks.{cfg.n_layers - 1}.hook_resid_post"


def _row(fit: Fit) -> dict:
    row = {k: getattr(fit, k) for k in ("mse", "r2", "mse_weighted", "r2_weighted", "shuffled_mse", "shuffled_r2")}
    return {**row, "mse_by_position": list(fit.mse_by_position), "r2_by_position": list(fit.r2_by_position)}


def score_model(
    model: HookedTransformer,
    hmm,
    data: BeliefData,
    *,
    shuffles: int = 0,
    seed: int = 0,
    sae=None,
    only_final: bool = False,
) -> tuple[dict, dict[str, Fit], dict[str, torch.Tensor]]:
    """Expected loss, and one regression to beliefs per hook, for all layers concatenated
    (``concat``) and, with ``sae``, from its codes on the final layer (``sae codes``); ``only_final``
    keeps the final layer and ``concat``. Returns the results, the fits and the regressed features.
    The shuffled baseline runs on the final layer and ``concat``."""
    names = hook_names(model.cfg)
    logits, feats = activations(model, data.tokens, names)
    final = final_hook(model.cfg)
    feats["concat"] = torch.cat([feats[n] for n in names[:-1]], -1)
    if sae is not None:
        feats["sae codes"] = sae_codes(sae, feats[final])
    if only_final:
        feats = {name: feats[name] for name in (final, "concat")}
    fits = {
        name: belief_regression(
            x,
            data.beliefs,
            weights=data.weights,
            shuffles=shuffles if name in (final, "concat") else 0,
            seed=seed,
        )
        for name, x in feats.items()
    }
    results = {"expected_loss": expected_loss(logits, hmm, data), "final_hook": final}
    results["hooks"] = {name: _row(fit) for name, fit in fits.items()}
    return results, fits, feats


def scoring_data(cfg: BeliefConfig) -> BeliefData:
    """The sequences :func:`run_beliefs` scores a model on: every sequence when there are at most
    ``cfg.max_sequences``, else a seeded sample; shared so that others report the same numbers."""
    return belief_data(process(cfg.process), cfg.n_ctx, max_sequences=cfg.max_sequences, seed=cfg.seed + 4)


def _train_sae(model: HookedTransformer, hmm, cfg: BeliefConfig, out: Path, progress: bool):
    """A TopK SAE, on the model's device, on the final layer's activations over fresh sequences from the process."""
    final = final_hook(model.cfg)
    tokens = hmm.sample(20_000, cfg.n_ctx, torch.Generator().manual_seed(cfg.seed + 2)).tokens
    acts = activations(model, tokens, [final])[1][final].reshape(-1, model.cfg.d_model)
    sae_cfg = SAEConfig("topk", model.cfg.d_model, cfg.sae_width, k=cfg.sae_k, seed=cfg.seed)
    train = TrainConfig(steps=1000, lr=1e-3)
    return sae_on_cached(
        acts,
        sae_cfg,
        train,
        cfg.seed + 3,
        checkpoint_dir=out / "sae-checkpoints",
        progress=progress,
        device=model.device,
    )


def open_model_run(
    cfg: BeliefConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    replace: bool = False,
    device: str | torch.device = "cpu",
) -> tuple[Path, HookedTransformer, float | None]:
    """The run folder of ``cfg`` (its ``config.json``) with the trained model in ``model/``, trained now or
    loaded, on ``device``, and the minutes training took (None when loaded): the first step of
    :func:`run_beliefs`, and all a sweep reads a hook from (:mod:`analysis.experiments.sweep.hooks`). The
    device is not part of the run's identity: a model trained on one device is reused on another."""
    device = resolve_device(device)  # before anything is written
    out = open_run(out_dir, cfg.model_identity(), replace=replace)
    hmm = process(cfg.process)
    batches = functools.partial(hmm.training_batches, cfg.batch_size, cfg.n_ctx, soft=cfg.soft, seed=cfg.seed + 1)
    tcfg = cfg.transformer(hmm.n_tokens)
    model, minutes = trained_model(out, tcfg, batches, cfg.train(), progress=progress, device=device)
    return out, model, minutes


def run_beliefs(
    cfg: BeliefConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    replace: bool = False,
    device: str | torch.device = "cpu",
) -> dict:
    """Train (or load) the model, score it and its random-init twin, write results and figures.

    A folder holding a run with another config is refused, or with ``replace`` emptied first. The models
    and the SAE train and run on ``device`` (the regressions on the CPU); the device is not part of the
    run's identity, so a model trained on one device is reused on another."""
    out, model, minutes = open_model_run(cfg, out_dir, progress=progress, replace=replace, device=device)
    device = model.device
    hmm = process(cfg.process)
    tcfg = cfg.transformer(hmm.n_tokens)
    data = scoring_data(cfg)
    sae = _train_sae(model, hmm, cfg, out, progress) if cfg.sae_width else None
    trained, fits, feats = score_model(model, hmm, data, shuffles=cfg.shuffles, seed=cfg.seed, sae=sae)
    untrained, _, _ = score_model(HookedTransformer(tcfg).to(device), hmm, data, seed=cfg.seed)
    final = trained["final_hook"]
    next_token = hmm.next_token_probs(data.beliefs)
    trained["distances"] = {
        name: distance_agreement(data.beliefs, fits[name].predict(feats[name]), next_token, seed=cfg.seed)
        for name in (final, "concat")
    }
    emergence, stages = _emergence(out, tcfg, hmm, data, cfg, device) if cfg.snapshots else ([], (None, {}))
    results = {
        "config": asdict(cfg),
        "process": hmm.name,
        "transformer": tcfg.to_dict(),
        "exhaustive": data.exhaustive,
        "n_sequences": len(data.tokens),
        "train_minutes": minutes,
        "optimal_loss": float(optimal_loss(hmm, cfg.n_ctx).mean()),
        "trained": trained,
        "untrained": untrained,
        "emergence": emergence,
    }
    write_text_atomic(out / "results.json", json.dumps(results, indent=1))
    _figures(out, cfg, results, data, fits, feats, stages)
    return results


def _emergence(
    out: Path, tcfg: TransformerConfig, hmm, data: BeliefData, cfg: BeliefConfig, device: torch.device
) -> tuple[list[dict], tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Loss and final-layer / concatenated R² at every kept snapshot (the untrained model is step 0),
    and the final layer's read-out at four of them with the true beliefs, for the emergence panels.
    Scored on a subset of
    :data:`EMERGENCE_SEQUENCES` sequences: a forward pass over all 3^10 Mess3 sequences costs ~10 s."""
    rows, stages = [], {}
    data = subset(data, EMERGENCE_SEQUENCES, seed=cfg.seed)
    kept = snapshots(out / "checkpoints")
    shown = {kept[round(i * (len(kept) - 1) / 3)][0] for i in range(4)} if kept else set()
    model = HookedTransformer(tcfg).to(device)
    for step, path in kept:
        model.load_state_dict(load_file(path))
        scores, fits, feats = score_model(model, hmm, data, seed=cfg.seed, only_final=True)
        final = scores["final_hook"]
        hooks = scores["hooks"]
        tokens = step * cfg.batch_size * cfg.n_ctx
        rows.append(
            {
                "step": step,
                "tokens": tokens,
                "expected_loss": scores["expected_loss"],
                "final_r2": hooks[final]["r2"],
                "final_mse": hooks[final]["mse"],
                "concat_r2": hooks["concat"]["r2"],
            }
        )
        if step in shown:
            stages[f"{tokens:,} tokens (R² {hooks[final]['r2']:.3f})"] = fits[final].predict(feats[final])
    return rows, (data.beliefs, stages)


def _figures(
    out: Path,
    cfg: BeliefConfig,
    results: dict,
    data: BeliefData,
    fits: dict,
    feats: dict,
    stages: tuple[torch.Tensor | None, dict[str, torch.Tensor]],
) -> None:
    from analysis.figures import save_figure  # matplotlib: only here
    from analysis.figures.beliefs import emergence_curve, layer_scores, simplex_panels

    trained, untrained = results["trained"], results["untrained"]
    final = trained["final_hook"]
    name = f"{cfg.process} ({cfg.model} model)"
    panels = {
        f"final layer (R² {trained['hooks'][final]['r2']:.3f})": fits[final].predict(feats[final]),
        f"all layers (R² {trained['hooks']['concat']['r2']:.3f})": fits["concat"].predict(feats["concat"]),
    }
    save_figure(simplex_panels(data.beliefs, panels, f"{name}: beliefs and their linear read-out"), out / "simplex")
    rows = {
        "trained": {k: v["mse"] for k, v in trained["hooks"].items()},
        "random init": {k: v["mse"] for k, v in untrained["hooks"].items()},
        "shuffled targets": {
            k: v["shuffled_mse"] for k, v in trained["hooks"].items() if v["shuffled_mse"] is not None
        },
    }
    by_position = {h: trained["hooks"][h]["mse_by_position"] for h in (final, "concat")}
    save_figure(layer_scores(rows, by_position, f"{name}: regression to beliefs"), out / "mse_per_layer")
    if results["emergence"]:
        em = results["emergence"]
        tokens = [r["tokens"] for r in em]
        series = {"final layer R²": [r["final_r2"] for r in em], "all layers R²": [r["concat_r2"] for r in em]}
        curve = emergence_curve(tokens, series, f"{name}: belief geometry over training", "held-out R²")
        save_figure(curve, out / "emergence")
        stages_fig = simplex_panels(*stages, f"{name}: final layer's read-out over training")
        save_figure(stages_fig, out / "emergence_simplex")


def belief_report(results: dict) -> str:
    """Plain-text tables of a :func:`run_beliefs` result: loss, MSE and R² per hook (trained, random
    init, shuffled targets), per position, distance agreement and emergence."""
    trained, untrained = results["trained"], results["untrained"]
    final = trained["final_hook"]
    optimum = results["optimal_loss"]
    scored = "all" if results["exhaustive"] else "a sample of"
    lines = [
        f"{results['process']}: scored on {scored} {results['n_sequences']:,} sequences, 20% held out"
        + ("" if results["train_minutes"] is None else f"; trained in {results['train_minutes']:.1f} min"),
        f"expected loss {trained['expected_loss']:.4f} nats, optimum {optimum:.4f} "
        f"({100 * (trained['expected_loss'] / optimum - 1):+.2f}%), random init {untrained['expected_loss']:.4f}",
        "",
        f"{'features':34s} {'MSE':>9} {'R²':>7} {'MSE (w)':>9} {'R² (w)':>7} {'R² init':>8} {'R² shuffled':>12}",
    ]
    for name, row in trained["hooks"].items():
        shuffled = "" if row["shuffled_r2"] is None else f"{row['shuffled_r2']:.4f}"
        init = untrained["hooks"].get(name, {}).get("r2")
        lines.append(
            f"{name + (' (final)' if name == final else ''):34s} {row['mse']:9.5f} {row['r2']:7.4f} "
            f"{row['mse_weighted']:9.5f} {row['r2_weighted']:7.4f} {'' if init is None else f'{init:8.4f}':>8} "
            f"{shuffled:>12}"
        )
    lines += [
        "",
        "held-out MSE by position (tokens seen): "
        + "  ".join(f"{k + 1:>7d}" for k in range(len(trained["hooks"][final]["mse_by_position"]))),
    ]
    for name in (final, "concat"):
        lines.append(f"  {name:36s} " + "  ".join(f"{v:7.5f}" for v in trained["hooks"][name]["mse_by_position"]))
    lines += ["", "pairwise distances of the read-out, squared correlation with distances between:"]
    for name, d in trained["distances"].items():
        lines.append(
            f"  {name:36s} true beliefs {d['beliefs_r2']:.3f}   next-token distributions {d['next_token_r2']:.3f}"
        )
    if results["emergence"]:
        lines += ["", f"{'training tokens':>16} {'loss':>8} {'R² final':>9} {'R² all layers':>14}"]
        for r in results["emergence"]:
            lines.append(f"{r['tokens']:16,d} {r['expected_loss']:8.4f} {r['final_r2']:9.4f} {r['concat_r2']:14.4f}")
    return "\n".join(lines)
