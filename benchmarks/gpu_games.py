"""A board-game recipe trained for a fixed wall-clock budget: how far more compute (a GPU, or a longer CPU
run) takes the model, the probe and the SAEs' board reconstruction (Karvonen et al. 2024).

The number of steps is what fits ``--minutes`` at the step rate measured on this machine first (a short
throwaway run on the same batches), so the learning-rate schedule is the recipe's for that length. The
run itself is :func:`analysis.experiments.games.run_games`: the numbers printed are ``groundtruth games``'
tables for a model of that many steps.

    python benchmarks/gpu_games.py othello --model paper --batch-size 512 --minutes 4 --device cuda
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import torch

from analysis.experiments.games import GameConfig, games_report, run_games
from groundtruth.devices import resolve_device
from toymodels.training import TrainConfig
from toymodels.transformer import HookedTransformer, train_transformer


def seconds_per_step(cfg: GameConfig, device, steps: int = 30) -> float:
    """Wall-clock seconds of one training step of ``cfg``'s model on ``device``, batches included: the mean
    over ``steps`` steps after five warm-up steps."""
    model = HookedTransformer(cfg.transformer()).to(device)
    batches = cfg.batches()
    train_transformer(model, batches, TrainConfig(steps=5, lr=cfg.lr), progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    train_transformer(model, batches, TrainConfig(steps=steps, lr=cfg.lr), progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("game", choices=["othello", "othello6", "chess"])
    parser.add_argument("--model", default="small")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--minutes", type=float, required=True, help="wall-clock budget for training the model")
    parser.add_argument("--hook", default="")
    parser.add_argument("--eval-games", type=int, default=2000)
    parser.add_argument("--sae-width", type=int, default=1024)
    parser.add_argument("--sae-steps", type=int, default=2000)
    parser.add_argument("--sae-games", type=int, default=4000)
    parser.add_argument("--saes", default="topk:16,topk:32,batchtopk:16", help="variant:knob, comma-separated")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        saes = tuple((v, float(k)) for v, k in (pair.split(":") for pair in args.saes.split(",")))
    except ValueError:
        parser.error(f"--saes must be variant:knob pairs separated by commas (topk:16,batchtopk:16), got {args.saes!r}")
    cfg = GameConfig(
        game=args.game,
        model=args.model,
        batch_size=args.batch_size,
        lr=args.lr,
        hook=args.hook,
        eval_games=args.eval_games,
        sae_width=args.sae_width,
        sae_steps=args.sae_steps,
        sae_games=args.sae_games,
        saes=saes,
    )
    device = resolve_device(args.device)
    per_step = seconds_per_step(cfg, device)
    steps = max(10, int(args.minutes * 60 / per_step))
    print(
        f"{args.game} {args.model} on {device}: {per_step * 1000:.1f} ms per step of {args.batch_size} games, "
        f"{args.batch_size / per_step:,.0f} games/s; {steps} steps ({steps * args.batch_size:,} games) in "
        f"{args.minutes:g} min",
        flush=True,
    )
    results = run_games(replace(cfg, steps=steps), args.out, progress=False, device=device)
    print(games_report(results))
    print(f"total {results['seconds'] / 60:.1f} min (training {results['train_minutes']:.1f} min)")
    summary = {"seconds_per_step": per_step, "steps": steps, "device": str(device), **results}
    Path(args.out, "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
