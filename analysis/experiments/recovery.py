"""Recovery experiments: train SAE variants on an activation source and score them against the truth.

An activation source is anything with ``activations(batch_size, seed)`` (an endless iterator of
``[n, d]`` tensors), ``eval_set(n, seed)`` (an :class:`groundtruth.ActivationBatch`) and ``parent``
(the hierarchy, -1 everywhere when there is none): :class:`groundtruth.SparseFeatureModel` and
:class:`toymodels.superposition.HiddenLayerSource` both are.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from analysis.metrics.recovery import score_sae
from groundtruth.atomic import write_text_atomic
from toymodels.sae import SAEConfig, make_sae, sae_class, save_sae
from toymodels.sae.training import train_sae
from toymodels.training import TrainConfig

logger = logging.getLogger(__name__)


def sae_config(variant: str, knob: float, d_in: int, d_sae: int, seed: int, **extra) -> SAEConfig:
    """The SAE of architecture ``variant`` with its sparsity knob (the class's ``sparsity_knob``:
    ``k`` or the coefficient) set to ``knob``; ``extra`` sets other :class:`SAEConfig` fields."""
    name = sae_class(variant).sparsity_knob
    value = int(knob) if name == "k" else float(knob)
    return SAEConfig(variant, d_in, d_sae, seed=seed, **{name: value}, **extra)


@dataclass(frozen=True)
class RecoveryRow:
    """One trained SAE's scores: the scoreboard's row."""

    source: str
    variant: str
    seed: int
    d_sae: int
    knob: float
    seconds: float
    l0: float
    fve: float
    mse: float
    mcc: float
    mmcs_true_to_learned: float
    mmcs_learned_to_true: float
    f1: float
    precision: float
    recall: float
    dead: int
    n_eval: int
    shrinkage: float
    gamma: float
    uniqueness: float
    absorption: float | None


def run_variant(
    source,
    source_name: str,
    sae_cfg: SAEConfig,
    train: TrainConfig,
    *,
    batch_size: int,
    eval_batch=None,
    n_eval: int = 20_000,
    out_dir: Path | None = None,
    progress: bool = True,
    batches: Iterable[torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[RecoveryRow, torch.nn.Module]:
    """Train one SAE on ``source`` and score it on a held-out evaluation set, on ``device``.

    ``batches`` (optional) are the training batches, e.g. pre-drawn ones that several variants share
    instead of each regenerating the stream, or a :meth:`groundtruth.SparseFeatureModel.prefetch` stream
    already on the device; by default the SAE's seed picks a fresh stream. The evaluation set stays on the
    CPU and is scored in batches on the SAE's device. The SAE is returned on ``device``.
    """
    sae = make_sae(sae_cfg)
    started = time.perf_counter()
    stream = iter(batches) if batches is not None else source.activations(batch_size, seed=sae_cfg.seed)
    train_sae(sae, stream, train, progress=progress, device=device)
    seconds = time.perf_counter() - started
    if eval_batch is None:
        eval_batch = source.eval_set(n_eval)
    parent = source.parent if bool((source.parent >= 0).any()) else None
    report = score_sae(sae, eval_batch.x, eval_batch.codes.to_dense(), eval_batch.directions, parent=parent)
    # The knob as trained: k, or the coefficient the L0 controller ended at (the config's without target_l0).
    knob = sae_cfg.k if sae_class(sae_cfg.architecture).sparsity_knob == "k" else sae.sparsity_coefficient()
    row = RecoveryRow(
        source=source_name,
        variant=sae_cfg.architecture,
        seed=sae_cfg.seed,
        d_sae=sae_cfg.d_sae,
        knob=float(knob),
        seconds=seconds,
        **{k: v for k, v in report.to_dict().items() if k in RecoveryRow.__dataclass_fields__},
    )
    if out_dir is not None:
        save_sae(sae, Path(out_dir) / "saes" / f"{source_name}-{sae_cfg.architecture}-{row.knob:g}-s{sae_cfg.seed}")
    logger.info("%s %s: %s", source_name, sae_cfg.architecture, row)
    return row, sae


def save_rows(rows: list[RecoveryRow], path: Path) -> None:
    """Write rows as JSON (atomically: a temporary file renamed into place)."""
    write_text_atomic(path, json.dumps([asdict(r) for r in rows], indent=1))


def load_rows(path: Path) -> list[RecoveryRow]:
    return [RecoveryRow(**r) for r in json.loads(Path(path).read_text())]


def scoreboard(rows: list[RecoveryRow]) -> str:
    """A plain-text table: variant, L0, FVE, MCC, MMCS, F1, dead, seconds."""
    head = (
        f"{'source':<20} {'variant':<21} {'L0':>6} {'FVE':>6} {'MCC':>6} {'MMCS':>6} {'F1':>6} {'dead':>5} {'sec':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.source:<20} {r.variant:<21} {r.l0:6.1f} {r.fve:6.3f} {r.mcc:6.3f} "
            f"{r.mmcs_true_to_learned:6.3f} {r.f1:6.3f} {r.dead:5d} {r.seconds:6.1f}"
        )
    lines.append("MMCS is true→learned (mean over true features of the best decoder cosine).")
    return "\n".join(lines)
