"""`groundtruth demo`: the SAE family on two sources with known features, and belief geometry.

Sources: the `synthsaebench-small` sparse feature model, and the hidden layer of a toy model of
superposition (40 features squeezed into 10 dimensions). Every variant is trained on each, scored
against the true directions and codes, and the results, SAEs and figures are written to one folder.
Then a small transformer learns Mess3 and its residual stream is regressed to the exact beliefs
(`groundtruth beliefs` with a small model, in ``beliefs/``), and a small transformer learns Othello,
whose board is read by probes and SAEs (`groundtruth games othello`, shortened, in ``othello/``). The sizes are chosen to finish within a
few minutes on a 2-core CPU; `benchmarks/` and `groundtruth beliefs` hold the full-size versions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from analysis.experiments.beliefs import BeliefConfig, run_beliefs
from analysis.experiments.games import GameConfig, run_games
from analysis.experiments.recovery import RecoveryRow, load_rows, run_variant, sae_config, save_rows, scoreboard
from analysis.figures import save_figure
from analysis.figures.recovery import cosine_heatmaps, ordered_cosines, recovery_vs_l0
from groundtruth import SparseFeatureModel, preset
from groundtruth.devices import resolve_device
from toymodels.sae import load_sae
from toymodels.superposition import HiddenLayerSource, ToyModelConfig, train_toy_model
from toymodels.training import TrainConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourcePlan:
    """How the demo trains SAEs on one source: width, batches, and each variant's sparsity knobs."""

    name: str
    d_sae: int
    steps: int
    batch_size: int
    lr: float
    knobs: dict[str, tuple[float, ...]]
    n_eval: int = 20_000


SYNTH = SourcePlan(
    name="synthsaebench-small",
    d_sae=512,
    steps=300,
    batch_size=1024,
    lr=1e-3,
    knobs={
        "standard": (5.0,),
        "topk": (16,),
        "batchtopk": (16,),
        "jumprelu": (3.0,),
        "gated": (9.0,),
        "matryoshka_batchtopk": (16,),
        "p_anneal": (4.0,),
    },
)
TOY = SourcePlan(
    name="toy-superposition",
    d_sae=40,
    steps=600,
    batch_size=1024,
    lr=3e-3,
    knobs={
        "standard": (0.3, 1.0),
        "topk": (2, 3),
        "batchtopk": (2, 3),
        "jumprelu": (0.03, 0.1),
        "gated": (0.3, 1.0),
        "matryoshka_batchtopk": (2, 3),
        "p_anneal": (0.1, 0.3),
    },
)
# Mess3 on a 2-layer, 32-wide transformer: the fractal is visible after about a minute on 2 cores.
BELIEFS = BeliefConfig(
    process="mess3", model="small", steps=1500, batch_size=256, lr=3e-3, snapshots=4, shuffles=20, sae_width=64, sae_k=3
)
# Othello on the small transformer for 500 steps (64k games, ~3 min on 2 cores): legal-move rate ~0.82 and a
# probe above the random-init one, far from the full run (`groundtruth games othello`), whose SAEs separate too.
GAMES = GameConfig(
    model="small",
    steps=500,
    eval_games=1000,
    sae_games=1000,
    sae_width=512,
    sae_steps=600,
    saes=(("topk", 8), ("topk", 32)),
)
TOY_MODEL = ToyModelConfig(
    n_features=40, d_hidden=10, feature_probability=0.05, importance_decay=1.0, steps=2000, batch_size=1024, lr=1e-2
)


def run_demo(
    out_dir: Path, *, seed: int = 0, quick: bool = False, progress: bool = True, device: str | torch.device = "cpu"
) -> tuple[list[RecoveryRow], dict, dict]:
    """Train, score and plot; returns the scoreboard rows, the belief-geometry results and the Othello
    results. ``quick`` shrinks everything (for tests). SAEs and transformers train on ``device``; the toy
    model of superposition (40 x 10) trains on the CPU, and data is drawn there."""
    device = resolve_device(device)  # before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scale = 0.05 if quick else 1.0  # quick: a smoke test of every code path, not a result
    toy_cfg = TOY_MODEL if not quick else TOY_MODEL.__class__(**{**TOY_MODEL.to_dict(), "steps": 100})
    logger.info("training the toy model of superposition")
    toy = train_toy_model(toy_cfg, progress=progress)
    sources = [
        (SYNTH, SparseFeatureModel(preset("synthsaebench-small", seed=seed))),
        (TOY, HiddenLayerSource(toy, seed=seed)),
    ]
    rows: list[RecoveryRow] = []
    for plan, source in sources:
        eval_batch = source.eval_set(max(500, int(plan.n_eval * scale)))
        save_file({"directions": eval_batch.directions.contiguous()}, out_dir / f"{plan.name}-directions.safetensors")
        train = TrainConfig(steps=max(10, int(plan.steps * scale)), lr=plan.lr, log_every=50)
        if quick:
            plan = replace(plan, d_sae=min(plan.d_sae, 256))
        # One shared training stream per source: every variant sees the same data, drawn once.
        stream = source.activations(plan.batch_size, seed=seed)
        batches = [next(stream).to(device) for _ in range(train.steps)]  # moved once, for every variant
        for variant, knobs in plan.knobs.items():
            for knob in knobs[:1] if quick else knobs:
                cfg = sae_config(variant, knob, eval_batch.x.shape[1], plan.d_sae, seed)
                row, _ = run_variant(
                    source,
                    plan.name,
                    cfg,
                    train,
                    batch_size=plan.batch_size,
                    eval_batch=eval_batch,
                    out_dir=out_dir,
                    progress=progress,
                    batches=batches,
                    device=device,
                )
                rows.append(row)
                save_rows(rows, out_dir / "results.json")
    make_figures(out_dir)
    beliefs = replace(BELIEFS, seed=seed) if not quick else replace(BELIEFS, seed=seed, n_ctx=4, steps=30, snapshots=2)
    logger.info("training a small transformer on Mess3")
    # replace: an earlier demo with other options leaves a model that does not apply
    belief_results = run_beliefs(beliefs, out_dir / "beliefs", progress=progress, replace=True, device=device)
    games = replace(GAMES, seed=seed)
    if quick:
        games = replace(games, model="tiny", steps=10, eval_games=16, sae_games=16, sae_width=32, sae_steps=10)
    logger.info("training a small transformer on Othello")
    othello = run_games(games, out_dir / "othello", progress=progress, replace=True, device=device)
    return rows, belief_results, othello


def make_figures(out_dir: Path) -> list[Path]:
    """Draw the demo's figures from what :func:`run_demo` saved in ``out_dir``."""
    out_dir = Path(out_dir)
    rows = load_rows(out_dir / "results.json")
    written = save_figure(recovery_vs_l0(rows), out_dir / "recovery_vs_l0")
    for source in sorted({r.source for r in rows}):
        true_dirs = load_file(out_dir / f"{source}-directions.safetensors")["directions"]
        first = {}  # one panel per variant: the run with its first knob
        for r in rows:
            if r.source == source:
                first.setdefault(r.variant, r)
        panels = {
            f"{r.variant} (MCC {r.mcc:.2f})": ordered_cosines(
                true_dirs, load_sae(out_dir / "saes" / f"{r.source}-{r.variant}-{r.knob:g}-s{r.seed}").W_dec.detach()
            )
            for r in first.values()
        }
        heatmaps = cosine_heatmaps(panels, f"{source}: decoder rows vs true directions")
        written += save_figure(heatmaps, out_dir / f"cosines-{source}")
    return written


__all__ = ["make_figures", "run_demo", "scoreboard"]
