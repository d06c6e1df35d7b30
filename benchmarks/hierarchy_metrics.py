"""Hedging and the per-edge absorption gap of the SAEs in sweep run folders (issue 20, part 5).

For every run of the given sweep output folders (optionally one seed), rebuilds the run's sparse source and its
held-out set from ``run.json``, encodes the set with the saved SAE and prints one markdown row with
:func:`analysis.metrics.recovery.absorption`, :func:`analysis.metrics.hierarchy.absorption_gap` and
:func:`analysis.metrics.hierarchy.hedging` (overall, and over root parents only, the parents every width can
track).  Matryoshka SAEs are also scored at each inner prefix (its first p latents and their codes), the narrow
SAEs nested inside them.  A second table compares hedging on the same parents: the roots every dictionary
scored tracks, with the mean cosine of their latents with them.

    OMP_NUM_THREADS=1 python benchmarks/hierarchy_metrics.py OUT_DIR [OUT_DIR ...] [--seed 0] [--sae NAME ...]
        [--target-l0 12]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from analysis.metrics.hierarchy import HedgingResult, absorption_gap, hedging
from analysis.metrics.recovery import absorption, cosine_matrix
from groundtruth import SparseFeatureConfig, SparseFeatureModel
from toymodels.sae.io import load_sae


def _mean(t: torch.Tensor) -> float:
    t = t[~torch.isnan(t)]
    return float(t.mean()) if t.numel() else math.nan


def score(codes: torch.Tensor, held, W_dec: torch.Tensor, model: SparseFeatureModel) -> tuple[dict, HedgingResult]:
    """The hierarchy metrics of one dictionary ``W_dec`` with its ``codes`` on the held-out set."""
    true_codes = held.codes.to_dense()
    parent = model.parent
    gap = absorption_gap(codes, true_codes, held.directions, W_dec, parent)
    hed = hedging(held.directions, W_dec, parent)
    roots = model.forest.level == 0
    edge_root = roots[hed.parent]
    return {
        "cos_parent": cosine_matrix(held.directions, W_dec).max(dim=1).values,
        "absorption": absorption(codes, true_codes, held.directions, W_dec, parent).score,
        "gap": gap.score,
        "gap_edges": gap.n_scored,
        "gap_roots": _mean(gap.gap[roots[gap.parent] & (gap.n_without >= 20) & (gap.n_with >= 20)]),
        "hedging": hed.score,
        "tracked": int(hed.tracked.sum()),
        "hedging_roots": _mean(hed.per_parent[roots]),
        "tracked_roots": int(hed.tracked[roots].sum()),
        "edge_untracked_child": _mean(hed.per_edge[edge_root & ~hed.child_tracked]),
        "edge_tracked_child": _mean(hed.per_edge[edge_root & hed.child_tracked]),
    }, hed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dirs", nargs="+", type=Path)
    parser.add_argument("--seed", type=int, default=None, help="only runs of this SAE seed")
    parser.add_argument("--sae", nargs="+", default=None, help="only runs of these SAE names")
    parser.add_argument("--target-l0", type=float, default=None, help="only runs at this target L0")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    sources: dict[str, tuple] = {}
    cols = ("absorption", "gap", "gap_edges", "gap_roots", "hedging", "tracked", "hedging_roots", "tracked_roots")
    cols += ("edge_untracked_child", "edge_tracked_child")
    print("| SAE | width | target L0 | " + " | ".join(cols) + " |")
    print("|" + "---|" * (3 + len(cols)))
    scored = []
    runs = [(p, json.loads((p / "run.json").read_text())) for d in args.out_dirs for p in (d / "runs").iterdir()]
    runs.sort(key=lambda r: (r[1]["columns"]["target_l0"], r[1]["columns"]["sae"], r[1]["columns"]["width"]))
    for run, info in runs:
        c = info["columns"]
        if (
            (args.seed is not None and c["seed"] != args.seed)
            or (args.sae is not None and c["sae"] not in args.sae)
            or (args.target_l0 is not None and c["target_l0"] != args.target_l0)
        ):
            continue
        key = json.dumps(info["config"]["source"], sort_keys=True)
        if key not in sources:
            model = SparseFeatureModel(SparseFeatureConfig.from_dict(info["config"]["source"]["sparse"]))
            sources[key] = (model, model.eval_set(info["config"]["train"]["n_eval"]))
        model, held = sources[key]
        sae = load_sae(run / "sae")
        codes = torch.cat([sae.encode(held.x[i : i + 4096]) for i in range(0, len(held), 4096)])
        W_dec = sae.W_dec.detach()
        widths = [w for w in (info["config"]["sae"].get("matryoshka_prefixes") or [])[:-1]] + [W_dec.shape[0]]
        for w in widths:
            row, hed = score(codes[:, :w], held, W_dec[:w], model)
            name = c["sae"] if w == W_dec.shape[0] else f"{c['sae']} (inner {w})"
            check = "" if w != W_dec.shape[0] else f" (run.json absorption {info['metrics']['absorption']:.4f})"
            cells = [f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]) for k in cols]
            print(f"| {name}{check} | {w} | {c['target_l0']:g} | " + " | ".join(cells) + " |", flush=True)
            scored.append((name, w, c["target_l0"], hed, row["cos_parent"], model.forest.level == 0))
    common = torch.stack([hed.tracked & roots for *_, hed, _, roots in scored]).all(dim=0)
    print(f"\nHedging on the {int(common.sum())} roots every dictionary above tracks:\n")
    print("| SAE | width | target L0 | hedging | cos(latent, parent) |\n|---|---|---|---|---|")
    for name, w, target, hed, cos_parent, _ in scored:
        print(f"| {name} | {w} | {target:g} | {_mean(hed.per_parent[common]):.4f} | {_mean(cos_parent[common]):.4f} |")


if __name__ == "__main__":
    main()
