"""Downstream scores of TopK SAEs spliced into the shipped models (:mod:`analysis.metrics.splice`): SAEBench's CE
loss recovered and KL against zero- and mean-ablation, and for Mess3 the belief R² of the later layers.

Each SAE trains on cached activations of fresh sequences (Mess3) or random games (Othello6) at one hook, then is
spliced in over held-out ones (Othello6's padding after a game's end is not scored). Prints one JSON object per
SAE and a Markdown table.
Run: OMP_NUM_THREADS=1 python benchmarks/bench_splice.py [--steps 2000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from analysis.experiments.activations import activations, sae_codes, sae_reconstructions
from analysis.experiments.skeleton import sae_on_cached
from analysis.metrics.recovery import fve, l0
from analysis.metrics.splice import splice_scores, spliced_belief_r2
from games import PAD, get_game
from groundtruth.processes import process
from toymodels import pretrained
from toymodels.sae import SAEConfig
from toymodels.training import TrainConfig

SETUPS = {  # model: (hook, SAE width, the k's, training sequences, held-out sequences)
    "mess3": ("blocks.1.hook_resid_post", 256, (2, 8), 4096, 1024),
    "othello6": ("blocks.1.hook_resid_post", 1024, (16, 32), 4000, 500),
}


def data(name: str, n_ctx: int, n_train: int, n_held: int):
    """Training inputs ``[n, n_ctx]``, held-out tokens ``[n, n_ctx + 1]`` (inputs and each one's next token),
    the padding token (or None) and, for Mess3, the held-out inputs' exact beliefs."""
    if name == "mess3":
        hmm = process("mess3")
        train = hmm.sample(n_train, n_ctx, torch.Generator().manual_seed(1)).tokens
        held = hmm.sample(n_held, n_ctx + 1, torch.Generator().manual_seed(2))
        return train, held.tokens, None, held.latents[:, :n_ctx]
    game = get_game(name)
    tokens = [
        torch.from_numpy(game.tokenize(game.random_games(n, np.random.default_rng(seed))))
        for n, seed in ((n_train, 1), (n_held, 2))
    ]
    return tokens[0][:, :n_ctx], tokens[1][:, : n_ctx + 1], PAD, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="SAE training steps (batches of 1,024 rows)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, (hook, width, ks, n_train, n_held) in SETUPS.items():
        model = pretrained(name)
        train, held, pad, beliefs = data(name, model.cfg.n_ctx, n_train, n_held)
        acts = activations(model, train, [hook], 256)[1][hook]
        acts = acts[train != pad] if pad is not None else acts.reshape(-1, acts.shape[-1])
        held_acts = activations(model, held[:, :-1], [hook], 256)[1][hook]
        real = held[:, :-1] != pad if pad is not None else torch.ones(held_acts.shape[:2], dtype=torch.bool)
        for k in ks:
            started = time.perf_counter()
            cfg = SAEConfig("topk", acts.shape[1], width, k=k, seed=0)
            sae = sae_on_cached(acts, cfg, TrainConfig(steps=args.steps, lr=1e-3), 3, progress=False)
            trained = time.perf_counter() - started
            codes = sae_codes(sae, held_acts[real])
            row = {"model": name, "hook": hook, "width": width, "k": k, "train_seconds": round(trained, 1)}
            row |= {"l0": l0(codes), "fve": fve(held_acts[real], sae_reconstructions(sae, codes))}
            started = time.perf_counter()
            row |= splice_scores(model, sae, held, hook, pad=pad)
            if beliefs is not None:
                for layer, r2 in spliced_belief_r2(model, sae, held[:, :-1], beliefs, hook).items():
                    row |= {f"belief_r2_clean@{layer}": r2["clean"], f"belief_r2_spliced@{layer}": r2["spliced"]}
            row["score_seconds"] = round(time.perf_counter() - started, 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
    keys = ["l0", "fve", "ce_loss_without_sae", "ce_loss_with_sae", "ce_loss_with_ablation"]
    keys += ["ce_loss_with_mean_ablation", "ce_loss_score", "ce_loss_score_mean_ablation", "kl_div_with_sae"]
    keys += ["kl_div_score", "kl_div_score_mean_ablation"]
    print("\n| model | k | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 2))
    for row in rows:
        print(f"| {row['model']} | {row['k']} | " + " | ".join(f"{row[key]:.4g}" for key in keys) + " |")


if __name__ == "__main__":
    main()
