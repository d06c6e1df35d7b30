"""The paper's hedging degree next to the ground-truth hedging, on SAEs from sweep run folders (issue 20, part 5).

Chanin, Dulka & Garriga-Alonso (2025) measure hedging without ground truth: add K latents to a trained SAE, train
on, and see how much of the original latents' decoder change lies in the new latents' span
(:func:`analysis.metrics.hierarchy.hedging_degree`). Here each given run's SAE is trained on for ``--steps``
batches twice on the same fresh stream, once as it is (the control, which absorbs drift) and once with ``--new``
K latents more (the extended SAE: the first N latents copied, the rest freshly initialised); the hedging degree
compares the two decoders, and :func:`analysis.metrics.hierarchy.hedging` reads the roots' hedging off the
control and the extended SAE's first N latents (the narrow SAE's hedging should fall once the children have
latents).

    OMP_NUM_THREADS=1 python benchmarks/hedging_degree.py RUN_DIR [RUN_DIR ...] [--steps 300] [--new 64]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import torch

from analysis.metrics.hierarchy import hedging, hedging_degree
from groundtruth import SparseFeatureConfig, SparseFeatureModel
from toymodels.sae.io import load_sae
from toymodels.sae.registry import make_sae
from toymodels.sae.training import train_saes
from toymodels.training import TrainConfig


def extended(sae, k: int):
    """``sae`` with ``k`` freshly initialised latents after its own (same architecture and settings)."""
    cfg = sae.cfg
    wide = make_sae(replace(cfg, d_sae=cfg.d_sae + k, seed=cfg.seed + 1))
    n = cfg.d_sae
    with torch.no_grad():
        wide.W_dec[:n] = sae.W_dec
        wide.W_enc[:, :n] = sae.W_enc
        wide.b_enc[:n] = sae.b_enc
        wide.b_dec.copy_(sae.b_dec)
        if hasattr(sae, "threshold"):
            wide.threshold.copy_(sae.threshold)
    return wide


def _roots_mean(t: torch.Tensor, roots: torch.Tensor) -> float:
    t = t[roots]
    t = t[~torch.isnan(t)]
    return float(t.mean()) if t.numel() else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--new", type=int, default=64, help="latents added (K; below d, or they span everything)")
    parser.add_argument("--seed", type=int, default=1, help="the fresh stream's seed (the sweep trained on 0..)")
    args = parser.parse_args()
    print(
        "| SAE | N | K | hedging degree | in new span | baseline | change | roots' hedging: before, control, extended |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        info = json.loads((run / "run.json").read_text())
        model = SparseFeatureModel(SparseFeatureConfig.from_dict(info["config"]["source"]["sparse"]))
        sae = load_sae(run / "sae")
        control, wide = copy.deepcopy(sae), extended(sae, args.new)
        train = TrainConfig(steps=args.steps, lr=info["config"]["train"]["lr"])
        batches = model.activations(info["config"]["train"]["batch_size"], seed=args.seed)
        train_saes([control, wide], batches, train, progress=False)
        n = sae.cfg.d_sae
        deg = hedging_degree(control.W_dec.detach(), wide.W_dec.detach())
        roots = model.forest.level == 0
        h = [_roots_mean(hedging(model.directions, w.W_dec.detach()[:n], model.parent).per_parent, roots) for w in
             (sae, control, wide)]  # fmt: skip
        print(
            f"| {info['columns']['sae']} | {n} | {args.new} | {deg.score:.4f} | {deg.in_new_span:.4f} | {deg.baseline:.4f} "
            f"| {deg.mean_change:.4f} | {h[0]:.3f}, {h[1]:.3f}, {h[2]:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
