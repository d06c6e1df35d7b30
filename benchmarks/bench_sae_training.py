"""SAE training throughput at d_in 256, d_sae 4096, batch 1024, side by side with SAELens's trainer.

Both train on one fixed batch (data generation is not timed). Prints samples/s, the ratio to
SAELens measured in the same run, and the fraction of this machine's measured fp32 matmul peak
reached by each step's dense-equivalent FLOPs. Run: python benchmarks/bench_sae_training.py
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time

import torch

from toymodels.sae import SAEConfig, make_sae
from toymodels.sae.training import train_sae
from toymodels.training import TrainConfig

D_IN, D_SAE, BATCH, K = 256, 4096, 1024, 32


def matmul_peak(seconds: float = 3.0) -> float:
    """Measured dense fp32 GFLOP/s on a square 2048 product."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * 2048**3 * count / (time.perf_counter() - start) / 1e9


def ours(arch: str, x: torch.Tensor, steps: int) -> float:
    sae = make_sae(SAEConfig(arch, D_IN, D_SAE, k=K, sparsity_coefficient=1.0))
    train_sae(sae, itertools.repeat(x), TrainConfig(steps=5, log_every=10**9), progress=False)  # warm-up
    start = time.perf_counter()
    train_sae(sae, itertools.repeat(x), TrainConfig(steps=steps, log_every=10**9), progress=False)
    return steps * BATCH / (time.perf_counter() - start)


def saelens(arch: str, x: torch.Tensor, steps: int) -> float:
    import sae_lens
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    configs = {
        "standard": sae_lens.StandardTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, l1_coefficient=1.0),
        "topk": sae_lens.TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K),
        "batchtopk": sae_lens.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K),
    }
    sae = sae_lens.TrainingSAE.from_dict(configs[arch].to_dict())
    trainer_cfg = SAETrainerConfig(
        n_checkpoints=0,
        checkpoint_path=None,
        save_final_checkpoint=False,
        total_training_samples=10**9,
        device="cpu",
        autocast=False,
        lr=3e-4,
        lr_end=3e-4,
        lr_scheduler_name="constant",
        lr_warm_up_steps=0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        lr_decay_steps=0,
        n_restart_cycles=1,
        train_batch_size_samples=BATCH,
        dead_feature_window=1000,
        feature_sampling_window=2000,
        logger=LoggingConfig(log_to_wandb=False, eval_every_n_wandb_logs=2**31 - 1),
    )
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=itertools.repeat(x), save_checkpoint_fn=lambda p: None)
    for _ in range(5):
        trainer._train_step(sae, x)
    start = time.perf_counter()
    for _ in range(steps):
        trainer._train_step(sae, x)
    return steps * BATCH / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--arch", nargs="*", default=["standard", "topk", "batchtopk"])
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    peak = matmul_peak()
    # forward + backward of a dense SAE: encoder, decoder and their gradients, 6 products of 2*n*d*m.
    dense_flops = 6 * 2 * BATCH * D_IN * D_SAE
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; matmul peak {peak:.0f} GFLOP/s")
    x = torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(0))
    try:
        import sae_lens  # noqa: F401

        have_saelens = True
    except ImportError:
        have_saelens = False
        print("sae-lens not installed (pip install -e '.[bench]'): no side-by-side anchor")
    for arch in args.arch:
        rate = ours(arch, x, args.steps)
        frac = rate / BATCH * dense_flops / 1e9 / peak
        line = f"{arch:10s} groundtruth {rate:9,.0f} samples/s ({frac:5.1%} of peak, dense-equivalent)"
        if have_saelens:
            theirs = saelens(arch, x, args.steps)
            line += f"   SAELens {theirs:9,.0f} samples/s   ratio {rate / theirs:4.2f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
