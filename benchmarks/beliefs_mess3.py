"""Shai et al. (2024) on Mess3 (0.05, 0.85): train the paper's transformer on CPU, then regress the
exact beliefs from its residual stream.

The evaluation set is every one of the 3^10 sequences of 10 tokens, each (sequence, position)
weighted by its probability, so the model's expected loss is exact and comparable with the optimum
0.8025 nats; the regression holds out 20% of sequences and is reported unweighted and weighted, with a
20-permutation shuffled-target baseline and the same regression on the untrained model.
Run: python benchmarks/beliefs_mess3.py [--steps 4000] [--batch 512] [--soft] [--out bench-results/mess3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from analysis.beliefs import belief_regression
from groundtruth.mixed_state import optimal_loss
from groundtruth.processes import mess3
from toymodels.train import TrainConfig
from toymodels.transformer import HookedTransformer, TransformerConfig, save_transformer, train_transformer

PAPER = TransformerConfig(n_layers=4, d_model=64, n_ctx=10, d_vocab=3, n_heads=1, d_mlp=256, seed=0)


def process_batches(hmm, batch: int, n_ctx: int, soft: bool, seed: int):
    """Training batches: ``n_ctx + 1`` tokens (hard targets) or ``n_ctx`` tokens with the exact
    next-token distributions after each (soft targets)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        if soft:
            sample = hmm.sample(batch, n_ctx, g)
            yield sample.tokens, hmm.next_token_probs(sample.latents).float()
        else:
            yield hmm.sample(batch, n_ctx + 1, g).tokens


def evaluate(model: HookedTransformer, hmm, n_ctx: int) -> dict:
    tokens, beliefs, logp = hmm.all_sequences(n_ctx)
    weights = torch.exp(logp[:, -1:]).expand(-1, n_ctx)
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names=names + ["ln_final.hook_normalized"])
    target = hmm.next_token_probs(beliefs[:, 1:])
    ce = -(target * logits.double().log_softmax(-1)).sum(-1)  # [N, n_ctx]
    out = {"expected_loss": float((ce * weights).sum() / weights.sum()), "layers": {}}
    latents = beliefs[:, 1:]
    for name in names + ["ln_final.hook_normalized"]:
        fit = belief_regression(cache[name], latents, weights=weights, shuffles=0)
        out["layers"][name] = {
            "mse": fit.mse,
            "r2": fit.r2,
            "mse_weighted": fit.mse_weighted,
            "r2_weighted": fit.r2_weighted,
        }
    concat = torch.cat([cache[n] for n in names], -1)
    fit = belief_regression(concat, latents, weights=weights, shuffles=20)
    out["concat"] = {
        "mse": fit.mse,
        "r2": fit.r2,
        "mse_weighted": fit.mse_weighted,
        "r2_weighted": fit.r2_weighted,
        "shuffled_mse": fit.shuffled_mse,
        "shuffled_r2": fit.shuffled_r2,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--soft", action="store_true", help="train on exact next-token distributions")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench-results/mess3")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hmm = mess3(0.05, 0.85)
    optimum = float(optimal_loss(hmm, PAPER.n_ctx).mean())
    model = HookedTransformer(PAPER)
    untrained = evaluate(model, hmm, PAPER.n_ctx)
    start = time.perf_counter()
    train_transformer(
        model,
        process_batches(hmm, args.batch, PAPER.n_ctx, args.soft, seed=1),
        TrainConfig(steps=args.steps, lr=args.lr, warmup_steps=100, checkpoint_every=500),
        checkpoint_dir=Path(args.out) / "checkpoints",
    )
    minutes = (time.perf_counter() - start) / 60
    trained = evaluate(model, hmm, PAPER.n_ctx)
    save_transformer(model, Path(args.out) / "model")
    final = trained["layers"][f"blocks.{PAPER.n_layers - 1}.hook_resid_post"]
    print(
        f"trained {args.steps} steps x {args.batch} x {PAPER.n_ctx} tokens ({'soft' if args.soft else 'hard'} "
        f"targets) in {minutes:.1f} min"
    )
    print(
        f"expected loss {trained['expected_loss']:.4f} nats vs optimum {optimum:.4f} "
        f"({100 * (trained['expected_loss'] / optimum - 1):.2f}% above); untrained {untrained['expected_loss']:.4f}"
    )
    print(f"{'hook':32s} {'MSE':>9} {'R2':>7} {'MSE(w)':>9} {'R2(w)':>7}   untrained R2")
    for name, row in trained["layers"].items():
        print(
            f"{name:32s} {row['mse']:9.5f} {row['r2']:7.4f} {row['mse_weighted']:9.5f} {row['r2_weighted']:7.4f}"
            f"   {untrained['layers'][name]['r2']:7.4f}"
        )
    c = trained["concat"]
    print(
        f"{'concat resid_post':32s} {c['mse']:9.5f} {c['r2']:7.4f} {c['mse_weighted']:9.5f} {c['r2_weighted']:7.4f}"
        f"   {untrained['concat']['r2']:7.4f}   shuffled targets: MSE {c['shuffled_mse']:.5f}, R2 {c['shuffled_r2']:.4f}"
    )
    print(f"final layer MSE {final['mse']:.5f} (paper: 0.0004)")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(
        json.dumps(
            {"args": vars(args), "minutes": minutes, "optimum": optimum, "trained": trained, "untrained": untrained},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
