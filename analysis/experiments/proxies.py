"""SAEBench's proxy metrics judged against ground truth: k-sparse probing, SCR and TPP
(:mod:`analysis.metrics.proxies`) for every SAE of a finished sweep on a sparse feature model, beside the
sweep's ground-truth F1 and MCC; then how well each proxy ranks the SAEs as ground truth does (Spearman) and
how much it moves when only the seed changes. Chanin (2026) ran this check on SynthSAEBench and found k-sparse
probing tracks ground truth while SCR and TPP do not.

Labels with a meaning here: whether a true feature fires. Probing uses features spread over the frequency
ranks of those firing often enough to give balanced sets; SCR pairs and TPP classes use the most frequent
features, no two in one tree of the hierarchy (a child fires only with its parent, so a pair from one tree has
an empty quadrant). SCR's spurious correlation is made by selection, as SAEBench makes it: the biased probe
sees only the rows where the two features agree. All data are held-out draws (``eval_set`` seeds 1 and 2),
disjoint from the training streams and from the sweep's scoring set (seed 0).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from analysis.experiments.sweep.results import load_results
from analysis.metrics.proxies import (
    DEFAULT_K_VALUES,
    DEFAULT_N_VALUES,
    LinearProbe,
    ScrProbes,
    scr,
    scr_probes,
    sparse_probing,
    tpp,
    tpp_probes,
)
from groundtruth import SparseFeatureConfig, SparseFeatureModel
from groundtruth.atomic import write_text_atomic
from groundtruth.checks import check_int, check_real
from groundtruth.threads import torch_threads
from toymodels.sae import load_sae

logger = logging.getLogger(__name__)

__all__ = [
    "GROUND_TRUTH",
    "HEADLINE_PROXIES",
    "ProxyTask",
    "proxy_scores",
    "proxy_summary",
    "proxy_task",
    "score_sweep",
    "write_proxies",
]

HEADLINE_PROXIES = ("sparse_probing_top_1", "scr_top_20", "tpp_top_20")
"""The proxies the summary and the figure show: top-1 probing accuracy, SCR and TPP with 20 latents ablated."""

GROUND_TRUTH = ("f1", "mcc")


@dataclass(frozen=True)
class ProxyTask:
    """Held-out activations of a sparse feature model with the labels the proxies use (which features fire)
    and the SCR and TPP probes on them, shared by every SAE scored on that model."""

    train_x: torch.Tensor
    test_x: torch.Tensor
    features: tuple[int, ...]  # the labelled features, the columns of train_active and test_active
    train_active: torch.Tensor  # [n_train, len(features)] bool: feature fires
    test_active: torch.Tensor
    probing: tuple[int, ...]
    scr_pairs: tuple[tuple[int, int], ...]
    tpp_classes: tuple[int, ...]
    scr_probes: tuple[ScrProbes, ...]
    tpp_probes: tuple[LinearProbe, ...]

    def labels(self, split: str, features: Sequence[int]) -> torch.Tensor:
        """Whether each of ``features`` fires, ``[n, len(features)]``, in the ``"train"`` or ``"test"`` split."""
        active = {"train": self.train_active, "test": self.test_active}[split]
        return active[:, [self.features.index(f) for f in features]]


def _roots(parent: torch.Tensor) -> torch.Tensor:
    root = torch.arange(len(parent))
    while True:
        up = parent[root]
        if bool((up < 0).all()):
            return root
        root = torch.where(up >= 0, up, root)


def proxy_task(
    model: SparseFeatureModel,
    *,
    n_train: int = 50_000,
    n_test: int = 20_000,
    n_probing: int = 16,
    n_pairs: int = 4,
    n_classes: int = 5,
    min_fraction: float = 0.02,
) -> ProxyTask:
    """The labelled data for :func:`proxy_scores`: ``n_probing`` features spread evenly over the frequency
    ranks of those firing in at least ``min_fraction`` of the train rows (and not in all but that fraction),
    and the most frequent of them from distinct trees as ``n_pairs`` SCR pairs and ``n_classes`` TPP classes."""
    for name, value in (("n_train", n_train), ("n_test", n_test), ("n_probing", n_probing)):
        check_int(name, value)
    check_int("n_pairs", n_pairs)
    check_int("n_classes", n_classes, 2)
    check_real("min_fraction", min_fraction, 0.0, 0.5, low_open=True)
    train, test = model.eval_set(n_train, seed=1), model.eval_set(n_test, seed=2)
    frequency = torch.bincount(train.codes.cols, minlength=model.config.n_features) / n_train
    order = torch.sort(frequency, descending=True, stable=True).indices
    eligible = order[(frequency[order] >= min_fraction) & (frequency[order] <= 1 - min_fraction)]
    if len(eligible) < n_probing:
        raise ValueError(
            f"n_probing={n_probing} but only {len(eligible)} features fire in [{min_fraction}, {1 - min_fraction}] "
            f"of {n_train} rows"
        )
    probing = eligible[torch.linspace(0, len(eligible) - 1, n_probing).round().long()]
    roots, seen, unrelated = _roots(model.parent), set(), []
    for feature in eligible.tolist():
        if int(roots[feature]) not in seen:
            seen.add(int(roots[feature]))
            unrelated.append(feature)
    if len(unrelated) < max(2 * n_pairs, n_classes):
        raise ValueError(
            f"n_pairs={n_pairs} and n_classes={n_classes} need {max(2 * n_pairs, n_classes)} frequent features "
            f"from distinct trees, found {len(unrelated)}"
        )
    pairs = tuple((unrelated[2 * i], unrelated[2 * i + 1]) for i in range(n_pairs))
    classes = tuple(unrelated[:n_classes])
    features = sorted({*probing.tolist(), *(f for pair in pairs for f in pair), *classes})
    train_active, test_active = train.codes.active()[:, features], test.codes.active()[:, features]
    task = ProxyTask(
        train.x, test.x, tuple(features), train_active, test_active, tuple(probing.tolist()), pairs, classes, (), ()
    )
    return dataclasses.replace(
        task,
        scr_probes=tuple(scr_probes(train.x, task.labels("train", pair)) for pair in pairs),
        tpp_probes=tpp_probes(train.x, task.labels("train", classes)),
    )


def _probed_feature_f1(codes: torch.Tensor, labels: torch.Tensor) -> float:
    """Ground truth for the probed features alone: the mean over them of the best latent's F1 of "latent fires"
    (non-zero) against "feature fires", so that probing can be compared with what it probes."""
    fires, labels = (codes != 0).float(), labels.float()
    hits = labels.T @ fires  # [features, latents]
    f1 = 2 * hits / (labels.sum(0)[:, None] + fires.sum(0)[None, :]).clamp(min=1)
    return float(f1.max(1).values.mean())


@torch.no_grad()
def proxy_scores(
    sae,
    task: ProxyTask,
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    n_values: Sequence[int] = DEFAULT_N_VALUES,
) -> dict[str, float]:
    """Every proxy of one SAE (anything with ``encode`` and ``W_dec``) on ``task``, each the mean over its
    labels: ``sparse_probing_top_{k}``, ``scr_top_{n}`` and ``tpp_top_{n}``; and ``probed_feature_f1``, the
    ground truth of the probed features alone (the best latent's F1 for each, averaged)."""
    train_codes, test_codes = sae.encode(task.train_x).float(), sae.encode(task.test_x).float()
    w_dec = sae.W_dec.detach().float()
    n_values = [n for n in n_values if n <= w_dec.shape[0]]
    probing = [
        sparse_probing(
            train_codes, task.labels("train", [f])[:, 0], test_codes, task.labels("test", [f])[:, 0], k_values
        )
        for f in task.probing
    ]
    scores = {f"sparse_probing_top_{k}": float(np.mean([p[k] for p in probing])) for k in k_values}
    scores["probed_feature_f1"] = _probed_feature_f1(test_codes, task.labels("test", task.probing))
    spurious = [
        scr(
            task.train_x,
            train_codes,
            task.labels("train", pair),
            task.test_x,
            test_codes,
            task.labels("test", pair),
            w_dec,
            n_values,
            probes=probes,
        )
        for pair, probes in zip(task.scr_pairs, task.scr_probes, strict=True)
    ]
    scores |= {f"scr_top_{n}": float(np.mean([s.score[n] for s in spurious])) for n in n_values}
    targeted = tpp(
        task.train_x,
        train_codes,
        task.labels("train", task.tpp_classes),
        task.test_x,
        test_codes,
        task.labels("test", task.tpp_classes),
        w_dec,
        n_values,
        probes=task.tpp_probes,
    )
    return scores | {f"tpp_top_{n}": targeted.score[n] for n in n_values}


def score_sweep(out_dir: str | Path, **task_options) -> pd.DataFrame:
    """The proxies of every finished run of the sweep in ``out_dir`` (sources must be sparse feature models),
    beside its columns and ground-truth metrics; written to ``out_dir/proxies.csv`` and returned. One
    :class:`ProxyTask` per source (``task_options`` go to :func:`proxy_task`), on one thread for the same bits
    whatever the machine's thread count."""
    out = Path(out_dir)
    runs = load_results(out)
    if runs.empty:
        raise ValueError(f"out_dir={str(out)!r} holds no finished runs")
    tasks: dict[str, ProxyTask] = {}
    rows = []
    with torch_threads(1):
        for run_id in runs["id"]:
            config = json.loads((out / "runs" / run_id / "run.json").read_text())["config"]
            source = config["source"]
            if "sparse" not in source:
                raise ValueError(f"run {run_id} has source {sorted(source)}; proxies need a sparse feature model")
            key = json.dumps(source, sort_keys=True)
            if key not in tasks:
                tasks[key] = proxy_task(
                    SparseFeatureModel(SparseFeatureConfig.from_dict(source["sparse"])), **task_options
                )
            sae = load_sae(out / "runs" / run_id / "sae")
            rows.append({"id": run_id, **proxy_scores(sae, tasks[key])})
            logger.info("proxies of run %s: %s", run_id, rows[-1])
    proxies = pd.DataFrame(rows)
    keep = ["id", *runs.attrs["columns"], *[m for m in ("l0", *GROUND_TRUTH) if m in runs]]
    table = runs[keep].merge(proxies, on="id")
    write_text_atomic(out / "proxies.csv", table.to_csv(index=False))
    return table


def proxy_summary(table: pd.DataFrame, proxies: Sequence[str] = HEADLINE_PROXIES) -> pd.DataFrame:
    """For each proxy (and each ground-truth metric, as a reference): Spearman's rank correlation with F1 and
    with MCC across all SAEs, and its reseed reliability over the configurations (every column but ``seed``):
    the mean coefficient of variation (std / |mean| over seeds) and the ratio of the mean within-configuration
    std to the std of the configuration means (below 1: the configurations differ more than the seeds)."""
    config = [c for c in ("source", "sae", "architecture", "width", "target_l0", "k", "coefficient") if c in table]
    rows = []
    for metric in (*proxies, *GROUND_TRUTH):
        groups = table.groupby(config, dropna=False)[metric]
        std, mean = groups.std(ddof=1), groups.mean()
        row = {"metric": metric}
        for truth in GROUND_TRUTH:
            row[f"spearman_{truth}"] = float(spearmanr(table[metric], table[truth]).statistic)
        row["cv_over_seeds"] = float((std / mean.abs()).mean())
        row["seed_std_over_config_std"] = float(std.mean() / mean.std(ddof=1))
        rows.append(row)
    return pd.DataFrame(rows)


def write_proxies(out_dir: str | Path) -> tuple[str, list[Path]]:
    """Score every run of the sweep in ``out_dir`` (:func:`score_sweep`, ``proxies.csv``) and summarise it
    (:func:`proxy_summary`, ``proxies_summary.csv``); returns the summary as text and the two paths."""
    out = Path(out_dir)
    summary = proxy_summary(score_sweep(out))
    write_text_atomic(out / "proxies_summary.csv", summary.to_csv(index=False))
    return summary.to_string(index=False, float_format="%.3f"), [out / "proxies.csv", out / "proxies_summary.csv"]
