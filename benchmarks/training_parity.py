"""Our SAEs against SAELens's, side by side: the same batches, budget, schedule and L0, scored the same way.

Every architecture SAELens also has trains on one fixed list of `synthsaebench-small` batches at width
1,024 (1.5M samples by default), with Adam and our schedule (the lr decays linearly to 0 over the last
20%, the sparsity coefficient warms up over the first 5%). The runs per architecture and learning rate:

- ``ours``: our defaults, and, where the architecture allows another decoder-norm policy, that one too
  (``ours/free``, ``ours/unit``): the defaults are the policy that wins here;
- ``saelens-best``: SAELens with decoder init norm 1.0 (its trainer always clips gradients at 1.0) and,
  for JumpReLU, the starting threshold our default picks on the first batch;
- ``saelens-default``: SAELens's default decoder init norm 0.1 and JumpReLU threshold 0.01;
- ``ours@saelens-init`` (only with ``--kinds``): our defaults started from the exact initial weights of
  ``saelens-best``, which separates what the two implementations do from what their random draws do.

TopK-style SAEs are matched in L0 by k. Penalty-based SAEs (standard, gated, JumpReLU) are matched by searching
the coefficient per run kind until L0 is within 10% of the target (log-log secant steps, at most four
runs); the L0 reached is printed beside the scores. Each row prints L0, FVE, MCC, F1, dead latents and
seconds of training; ``--seeds 0 1`` repeats the matched runs on a second seed to show the noise.
Run: python benchmarks/training_parity.py [--lrs 3e-4 1e-3] [--seeds 0 1] [--archs jumprelu standard]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import torch

from analysis.metrics.recovery import score_sae
from groundtruth import SparseFeatureModel, preset
from toymodels.sae import SAEConfig, make_sae
from toymodels.sae.jumprelu import JumpReLUSAE
from toymodels.sae.registry import SAE_CLASSES
from toymodels.sae.training import train_sae
from toymodels.training import TrainConfig

ARCHS = ("standard", "topk", "batchtopk", "jumprelu", "gated", "matryoshka_batchtopk")
PENALISED = ("standard", "jumprelu", "gated")
FIRST_GUESS = {"standard": 3.5, "jumprelu": 2.0, "gated": 5.0}  # coefficients near L0 16 on this data
WARMUP_FRACTION = 0.05  # our sparsity-coefficient warm-up, mirrored in SAELens's warm-up steps


def saelens_sae(arch: str, knob: float, d_in: int, d_sae: int, steps: int, init_norm: float, jump_init: float):
    """A SAELens training SAE configured like ours (same widths, warm-up, JumpReLU threshold and bandwidth)."""
    import sae_lens

    common = {"d_in": d_in, "d_sae": d_sae, "decoder_init_norm": init_norm}
    warm = int(WARMUP_FRACTION * steps)
    if arch == "standard":
        cfg = sae_lens.StandardTrainingSAEConfig(**common, l1_coefficient=knob, l1_warm_up_steps=warm)
    elif arch == "gated":
        cfg = sae_lens.GatedTrainingSAEConfig(**common, l1_coefficient=knob, l1_warm_up_steps=warm)
    elif arch == "jumprelu":
        ours = SAEConfig("jumprelu", d_in, d_sae)
        cfg = sae_lens.JumpReLUTrainingSAEConfig(
            **common,
            l0_coefficient=knob,
            l0_warm_up_steps=warm,
            jumprelu_init_threshold=jump_init,
            jumprelu_bandwidth=ours.jump_bandwidth,
        )
    elif arch == "topk":
        cfg = sae_lens.TopKTrainingSAEConfig(**common, k=int(knob))
    elif arch == "batchtopk":
        cfg = sae_lens.BatchTopKTrainingSAEConfig(**common, k=int(knob))
    else:
        widths = list(SAE_CLASSES[arch](SAEConfig(arch, d_in, d_sae, k=int(knob))).prefixes())
        cfg = sae_lens.MatryoshkaBatchTopKTrainingSAEConfig(**common, k=int(knob), matryoshka_widths=widths)
    return sae_lens.TrainingSAE.from_dict(cfg.to_dict())


def train_saelens(sae, batches: list[torch.Tensor], lr: float) -> None:
    """SAELens's own trainer step on each batch, with our learning-rate schedule."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    steps, batch = len(batches), batches[0].shape[0]
    cfg = SAETrainerConfig(
        n_checkpoints=0,
        checkpoint_path=None,
        save_final_checkpoint=False,
        total_training_samples=steps * batch,
        device="cpu",
        autocast=False,
        lr=lr,
        lr_end=0.0,
        lr_scheduler_name="constant",
        lr_warm_up_steps=0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        lr_decay_steps=int(TrainConfig(steps=steps).decay_fraction * steps),
        n_restart_cycles=1,
        train_batch_size_samples=batch,
        dead_feature_window=1000,
        feature_sampling_window=2000,
        logger=LoggingConfig(log_to_wandb=False, eval_every_n_wandb_logs=2**31 - 1),
    )
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=iter(batches), save_checkpoint_fn=lambda p: None)
    for x in batches:  # what SAETrainer.fit does per batch, without its evals and logging
        trainer.maybe_reset_sparsity()
        trainer.step(x)
        trainer.n_training_steps += 1


def inference_form(sae):
    """The SAELens inference SAE (BatchTopK becomes JumpReLU with its learned threshold)."""
    from sae_lens import SAE

    with tempfile.TemporaryDirectory() as tmp:
        sae.save_inference_model(tmp)
        return SAE.load_from_disk(tmp)


def starting_threshold(d_in: int, d_sae: int, seed: int, first_batch: torch.Tensor) -> float:
    """The JumpReLU threshold our default picks on the first batch, for SAELens to start from too."""
    sae = make_sae(SAEConfig("jumprelu", d_in, d_sae, seed=seed))
    with torch.no_grad():
        return JumpReLUSAE.initial_threshold(sae.pre_activations(first_batch), JumpReLUSAE.init_density)


@torch.no_grad()
def start_from(ours, theirs) -> None:
    """Copy a SAELens training SAE's initial weights into ours (the names agree, see ``saved_tensors``)."""
    for name, attr in ours.saved_tensors.items():
        getattr(ours, attr).copy_(getattr(theirs, name).float())
    if isinstance(ours, JumpReLUSAE):
        ours.threshold_set.fill_(True)  # started from SAELens's threshold, not re-picked on the first batch


def run(kind: str, arch: str, knob: float, lr: float, seed: int, batches, held_out, parent, args) -> dict:
    """Train one SAE of ``kind`` (``ours``, ``ours/<policy>``, ``saelens-best``, ``saelens-default``) and score it."""
    d_in = batches[0].shape[1]
    start = time.perf_counter()
    if kind.startswith("ours"):
        extra = {"decoder_norm": kind.split("/")[1]} if "/" in kind else {}
        knob_field = "sparsity_coefficient" if arch in PENALISED else "k"
        value = float(knob) if arch in PENALISED else int(knob)
        cfg = SAEConfig(arch, d_in, args.d_sae, seed=seed, **{knob_field: value}, **extra)
        sae = make_sae(cfg)
        if kind == "ours@saelens-init":
            jump_init = starting_threshold(d_in, args.d_sae, seed, batches[0])
            torch.manual_seed(seed)  # the same draw as saelens-best's
            theirs = saelens_sae(arch, knob, d_in, args.d_sae, len(batches), 1.0, jump_init)
            start_from(sae, theirs)
        train_sae(sae, iter(batches), TrainConfig(steps=len(batches), lr=lr, log_every=10**9), progress=False)
    else:
        best = kind == "saelens-best"
        jump_init = starting_threshold(d_in, args.d_sae, seed, batches[0]) if best else 0.01
        torch.manual_seed(seed)  # SAELens draws its initial weights from the global generator
        sae = saelens_sae(arch, knob, d_in, args.d_sae, len(batches), 1.0 if best else 0.1, jump_init)
        train_saelens(sae, batches, lr)
        sae = inference_form(sae)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        report = score_sae(sae, held_out.x, held_out.codes.to_dense(), held_out.directions, parent=parent).to_dict()
    return {"kind": kind, "arch": arch, "lr": lr, "seed": seed, "knob": knob, "seconds": seconds, **report}


def matched(kind, arch, lr, batches, held_out, parent, args, guess: float) -> tuple[dict, list[dict]]:
    """The run of ``kind`` whose L0 is within 10% of ``args.l0``: k for TopK-style SAEs, else a
    log-log secant search on the coefficient starting from ``guess``. Returns it and every trial.
    With ``--coefficient`` the coefficient is fixed instead, and the L0s reached are compared."""
    if arch in PENALISED and args.coefficient is not None:
        row = run(kind, arch, args.coefficient, lr, args.seeds[0], batches, held_out, parent, args)
        return row, [row]
    if arch not in PENALISED:
        row = run(kind, arch, args.l0, lr, args.seeds[0], batches, held_out, parent, args)
        return row, [row]
    trials, coefficient = [], guess
    for _ in range(4):
        row = run(kind, arch, coefficient, lr, args.seeds[0], batches, held_out, parent, args)
        trials.append(row)
        if abs(row["l0"] / args.l0 - 1) <= 0.1:
            break
        slope = -1.0  # d log coefficient / d log L0; assume L0 ∝ 1/coefficient until two trials tell
        if len(trials) > 1:
            (c0, l0), (c1, l1) = [(math.log(t["knob"]), math.log(max(t["l0"], 1e-3))) for t in trials[-2:]]
            slope = (c1 - c0) / (l1 - l0) if l1 != l0 else -1.0
        step = slope * (math.log(args.l0) - math.log(max(row["l0"], 1e-3)))
        coefficient = row["knob"] * math.exp(min(max(step, -math.log(10)), math.log(10)))  # at most 10x a step
    best = min(trials, key=lambda t: abs(math.log(max(t["l0"], 1e-3) / args.l0)))
    return best, trials


def kinds(arch: str, include_default: bool) -> list[str]:
    policies = SAE_CLASSES[arch].decoder_policies
    ours = [f"ours/{p}" for p in policies] if len(policies) > 1 else ["ours"]
    return ours + ["saelens-best"] + (["saelens-default"] if include_default else [])


def fmt(row: dict) -> str:
    return (
        f"  {row['kind']:16s} knob {row['knob']:<7.4g} L0 {row['l0']:6.2f}  FVE {row['fve']:.3f}  "
        f"MCC {row['mcc']:.3f}  F1 {row['f1']:.3f}  dead {row['dead']:4d}  {row['seconds']:6.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--d-sae", type=int, default=1024)
    parser.add_argument("--l0", type=float, default=16.0, help="target L0 (the data's true L0 is about 16)")
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="first: matching; others: noise")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--no-saelens-default", action="store_true", help="skip SAELens at its default init")
    parser.add_argument("--kinds", nargs="+", help="run these kinds (e.g. ours/unit ours@saelens-init saelens-best)")
    parser.add_argument(
        "--coefficient", type=float, help="fix the coefficient of penalised SAEs instead of searching for --l0"
    )
    parser.add_argument("--n-eval", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--out", default="bench-results/training_parity.json")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = SparseFeatureModel(preset("synthsaebench-small"))
    held_out = model.eval_set(args.n_eval)
    print(
        f"synthsaebench-small, width {args.d_sae}, {args.steps} steps of {args.batch}, target L0 {args.l0}, "
        f"{args.n_eval:,} held-out rows",
        flush=True,
    )
    rows = []
    for seed_index, seed in enumerate(args.seeds):
        stream = model.activations(batch_size=args.batch, seed=seed)
        batches = [next(stream) for _ in range(args.steps)]
        for lr in args.lrs:
            for arch in args.archs:
                print(f"{arch}, lr {lr:g}, seed {seed}", flush=True)
                for kind in args.kinds or kinds(arch, not args.no_saelens_default):
                    if seed_index == 0:
                        guess = next(
                            (r["knob"] for r in reversed(rows) if r["arch"] == arch and r["lr"] == lr),
                            FIRST_GUESS.get(arch, args.l0),
                        )
                        row, trials = matched(kind, arch, lr, batches, held_out, model.parent, args, guess)
                        for t in trials:
                            if t is not row:
                                print(fmt(t) + "  (trial)", flush=True)
                    else:  # the first seed's matched knob, to show the noise
                        knob = next(
                            r["knob"]
                            for r in rows
                            if (r["arch"], r["lr"], r["kind"], r["seed"]) == (arch, lr, kind, args.seeds[0])
                        )
                        row = run(kind, arch, knob, lr, seed, batches, held_out, model.parent, args)
                    rows.append(row)
                    print(fmt(row), flush=True)
        del batches
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
