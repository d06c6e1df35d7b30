"""SAEBench's proxy metrics judged against ground truth: k-sparse probing, SCR and TPP
(:mod:`analysis.metrics.proxies`) for every SAE of a finished sweep on a sparse feature model or on a hook of a
games model, beside the sweep's ground truth (F1 and MCC; board reconstruction F1 and coverage); then how well
each proxy ranks the SAEs as ground truth does (Spearman) and how much it moves when only the seed changes.
Chanin (2026) ran this check on SynthSAEBench and found k-sparse probing tracks ground truth while SCR and TPP
do not.

Labels with a meaning here: whether a true feature fires. Probing uses features spread over the frequency
ranks of those firing often enough to give balanced sets; SCR pairs and TPP classes use the most frequent
features, no two in one tree of the hierarchy (a child fires only with its parent, so a pair from one tree has
an empty quadrant). SCR's spurious correlation is made by selection, as SAEBench makes it: the biased probe
sees only the rows where the two features agree. All data are held-out draws (``eval_set`` seeds 1 and 2),
disjoint from the training streams and from the sweep's scoring set (seed 0). On a games model the labels are
the pieces on the board, and squares stand for trees (:func:`board_proxy_task`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from analysis.experiments.activations import activations
from analysis.experiments.games import EvalGames, GameConfig
from analysis.experiments.sweep.hooks import ModelHook, model_hook
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
from games import PAD
from groundtruth import SparseFeatureConfig, SparseFeatureModel
from groundtruth.atomic import write_text_atomic
from groundtruth.checks import check_int, check_real
from groundtruth.threads import torch_threads
from toymodels.sae import load_sae
from toymodels.transformer import load_transformer

logger = logging.getLogger(__name__)

__all__ = [
    "GROUND_TRUTH",
    "HEADLINE_PROXIES",
    "ProxyTask",
    "board_proxy_task",
    "ground_truth_columns",
    "proxy_scores",
    "proxy_summary",
    "proxy_task",
    "require_columns",
    "score_sweep",
    "write_proxies",
]

HEADLINE_PROXIES = ("sparse_probing_top_1", "scr_top_20", "tpp_top_20")
"""The proxies the summary and the figure show: top-1 probing accuracy, SCR and TPP with 20 latents ablated."""

GROUND_TRUTH = {"sparse": ("f1", "mcc"), "games": ("board_f1", "coverage")}
"""The ground-truth columns of a sweep's table by source: a sparse feature model's F1 and MCC, a games
model's board reconstruction F1 of the pieces and coverage of the board."""

_GAMES_PER_PASS = 256  # games per forward pass when collecting a games model's activations


def ground_truth_columns(table: pd.DataFrame) -> tuple[str, ...]:
    """The ground-truth columns of ``table`` (one of the sets of :data:`GROUND_TRUTH`, all present)."""
    for columns in GROUND_TRUTH.values():
        if all(c in table for c in columns):
            return columns
    raise ValueError(
        f"table holds none of the ground-truth column sets {list(GROUND_TRUTH.values())}; it has {list(table.columns)}"
    )


@dataclass(frozen=True)
class ProxyTask:
    """Held-out activations with the binary labels the proxies use (which features of a sparse feature model
    fire, or which pieces a games model's board holds) and the SCR and TPP probes on them, shared by every SAE
    scored on that source. Labels are numbered as the source numbers them (feature index, or column of the
    pieces' properties); ``names`` gives each of ``features`` its name where labels have one
    (``mine@C3``)."""

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
    names: tuple[str, ...] = ()

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


def _check_sizes(n_probing: int, n_pairs: int, n_classes: int, min_fraction: float) -> None:
    check_int("n_probing", n_probing)
    check_int("n_pairs", n_pairs)
    check_int("n_classes", n_classes, 2)
    check_real("min_fraction", min_fraction, 0.0, 0.5, low_open=True)


def _labelled_task(
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    group: torch.Tensor,
    *,
    n_probing: int,
    n_pairs: int,
    n_classes: int,
    min_fraction: float,
    kind: str,
    names: Sequence[str] = (),
) -> ProxyTask:
    """The task on candidate labels ``[n, L]`` (bool; ``group [L]`` says which labels are tied, by hierarchy
    or by square, ``kind`` names what they are in errors): probing labels spread evenly over the balance ranks
    (the share of the rarer class, which caps a balanced set; a label firing less than half the time ranks by
    its frequency) of those with both classes in at least ``min_fraction`` of the train rows, and the best
    balanced of them, one per group, as SCR pairs and TPP classes."""
    n_train = len(train_labels)
    counts = sum(part.sum(0) for part in train_labels.split(1024))  # in parts: a sum of bools upcasts them all
    balance = torch.minimum(counts, n_train - counts)  # rows of the rarer class, in integers to rank ties exactly
    order = torch.sort(balance, descending=True, stable=True).indices
    eligible = order[balance[order] >= min_fraction * n_train]
    if len(eligible) < n_probing:
        raise ValueError(
            f"n_probing={n_probing} but only {len(eligible)} {kind} fire in [{min_fraction}, {1 - min_fraction}] "
            f"of {n_train} rows"
        )
    probing = eligible[torch.linspace(0, len(eligible) - 1, n_probing).round().long()]
    seen, unrelated = set(), []
    for label in eligible.tolist():
        if int(group[label]) not in seen:
            seen.add(int(group[label]))
            unrelated.append(label)
    if len(unrelated) < max(2 * n_pairs, n_classes):
        raise ValueError(
            f"n_pairs={n_pairs} and n_classes={n_classes} need {max(2 * n_pairs, n_classes)} balanced {kind} "
            f"from distinct {'trees' if kind == 'features' else 'squares'}, found {len(unrelated)}"
        )
    pairs = tuple((unrelated[2 * i], unrelated[2 * i + 1]) for i in range(n_pairs))
    classes = tuple(unrelated[:n_classes])
    labelled = sorted({*probing.tolist(), *(f for pair in pairs for f in pair), *classes})
    task = ProxyTask(
        train_x,
        test_x,
        tuple(labelled),
        train_labels[:, labelled],
        test_labels[:, labelled],
        tuple(probing.tolist()),
        pairs,
        classes,
        (),
        (),
        tuple(names[f] for f in labelled) if names else (),
    )
    return dataclasses.replace(
        task,
        scr_probes=tuple(scr_probes(train_x, task.labels("train", pair)) for pair in pairs),
        tpp_probes=tpp_probes(train_x, task.labels("train", classes)),
    )


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
    check_int("n_train", n_train)
    check_int("n_test", n_test)
    _check_sizes(n_probing, n_pairs, n_classes, min_fraction)
    train, test = model.eval_set(n_train, seed=1), model.eval_set(n_test, seed=2)
    return _labelled_task(
        train.x,
        test.x,
        train.codes.active(),
        test.codes.active(),
        _roots(model.parent),
        n_probing=n_probing,
        n_pairs=n_pairs,
        n_classes=n_classes,
        min_fraction=min_fraction,
        kind="features",
    )


def _board_rows(model, spec: ModelHook, cfg: GameConfig, n_games: int, purpose: str):
    """Activations ``[rows, d]`` at the hook and the pieces' labels ``[rows, P]`` at the real positions of
    ``n_games`` games drawn for ``purpose``, the rows in a random order (fixed by the seed)."""
    games = EvalGames.draw(cfg, n_games, spec.seed(purpose))
    x = activations(model, games.inputs, [spec.hook], _GAMES_PER_PASS)[1][spec.hook]
    real = games.inputs != PAD
    columns = [i for i, name in enumerate(games.names) if name.partition("@")[0] in cfg.pieces]
    order = torch.randperm(int(real.sum()), generator=torch.Generator().manual_seed(spec.seed(f"{purpose} order")))
    return x[real][order], games.labels[real][:, columns][order], [games.names[i] for i in columns]


def board_proxy_task(
    spec: ModelHook,
    *,
    n_train_games: int = 1000,
    n_test_games: int = 500,
    n_probing: int = 16,
    n_pairs: int = 4,
    n_classes: int = 5,
    min_fraction: float = 0.02,
) -> ProxyTask:
    """The labelled data for :func:`proxy_scores` at the hook of a games model (a resolved sweep source,
    :func:`analysis.experiments.sweep.hooks.model_hook`): the hook's activations at the real positions (not
    padding) of held-out games, labelled with the pieces of the board, ``class@square`` for each class of
    ``GameConfig.pieces`` (Othello's mine and theirs: what board reconstruction F1 scores; the empty class is
    left out because the position in the game alone predicts much of it).

    Why SCR and TPP mean something here: a square holds one class, so two properties of one square never
    both hold and a pair of them has an empty quadrant; properties of two distinct squares can hold in any
    combination but are correlated by the game (neighbouring pieces flip together, the board fills up), so
    SCR pairs take them from distinct squares, and SAEBench's selection (the biased probe sees only rows where
    they agree) makes a probe for one lean on the other, which ablating the other square's latents undoes.
    TPP classes are properties of distinct squares: separate concepts, whose latents an SAE that represents
    the board should keep apart. Probing and the pairs and classes are chosen as in :func:`proxy_task`, over
    the balance ranks of the properties (the share of the rarer class), squares standing for trees.

    ``n_train_games`` and ``n_test_games`` games (about ``n_ctx`` rows each) are drawn with seeds derived from
    the model and apart from those the sweep trains and scores on (``ModelHook.seed``); the rows are shuffled
    because the balanced sets keep the first rows of each class, which in game order would come from the first
    games only."""
    check_int("n_train_games", n_train_games)
    check_int("n_test_games", n_test_games)
    _check_sizes(n_probing, n_pairs, n_classes, min_fraction)
    if spec.kind != "games":
        raise ValueError(f"spec must be a hook of a games model, got a hook of a {spec.kind} model in {spec.folder!r}")
    cfg = GameConfig.from_dict({k: v for k, v in spec.config.items() if k != "train"})
    model = load_transformer(Path(spec.folder) / "model")
    train_x, train_labels, names = _board_rows(model, spec, cfg, n_train_games, "proxies train")
    test_x, test_labels, _ = _board_rows(model, spec, cfg, n_test_games, "proxies test")
    squares = {square: i for i, square in enumerate(dict.fromkeys(name.partition("@")[2] for name in names))}
    group = torch.tensor([squares[name.partition("@")[2]] for name in names])
    return _labelled_task(
        train_x,
        test_x,
        train_labels,
        test_labels,
        group,
        n_probing=n_probing,
        n_pairs=n_pairs,
        n_classes=n_classes,
        min_fraction=min_fraction,
        kind="board properties",
        names=names,
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


def _model_hooks(out: Path) -> list[ModelHook]:
    """The hook sources the sweep file saved in ``out`` names, resolved as ``groundtruth sweep run`` resolves
    them (run folders relative to the working directory)."""
    try:
        sources = tomllib.loads((out / "sweep.toml").read_text()).get("sources", {})
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"out_dir={str(out)!r}: cannot read the sweep file sweep.toml: {err}") from None
    return [model_hook(table) for table in sources.values() if isinstance(table, dict) and "run" in table]


def _source_task(out: Path, run_id: str, source: dict, hooks: list[ModelHook] | None, task_options: dict):
    """The proxy task of a run's ``source`` (its identity in run.json) and the resolved hook sources (read
    from the sweep file the first time a games source needs them)."""
    if "sparse" in source:
        return proxy_task(SparseFeatureModel(SparseFeatureConfig.from_dict(source["sparse"])), **task_options), hooks
    hook = source.get("model_hook")
    if hook is None:
        raise ValueError(
            f"run {run_id} has source {sorted(source)}; proxies need a sparse feature model or a hook of a games model"
        )
    if "game" not in hook["run"]:
        raise ValueError(
            f"run {run_id} has a hook of a beliefs model ({hook['run'].get('process')!r}) as source: its ground "
            f"truth is a continuous belief state, with no binary properties for the proxies to probe"
        )
    hooks = _model_hooks(out) if hooks is None else hooks
    for spec in hooks:
        if spec.identity() == hook:
            return board_proxy_task(spec, **task_options), hooks
    raise ValueError(
        f"run {run_id} reads {hook['hook']} of a games model (weights sha256 {hook['weights_sha256'][:12]}...) that "
        f"no run folder named in {str(out / 'sweep.toml')!r} holds now (folders are relative to the working "
        f"directory, as for groundtruth sweep run)"
    )


def score_sweep(out_dir: str | Path, **task_options) -> pd.DataFrame:
    """The proxies of every finished run of the sweep in ``out_dir`` beside its columns and ground-truth
    metrics (:data:`GROUND_TRUTH`); written to ``out_dir/proxies.csv`` and returned. Sources must be sparse
    feature models (:func:`proxy_task`) or hooks of games models (:func:`board_proxy_task`, the model found
    through the run folders of the saved sweep file, relative to the working directory); one task per source,
    ``task_options`` go to its builder. On one thread, for the same bits whatever the machine's thread count."""
    out = Path(out_dir)
    runs = load_results(out)
    if runs.empty:
        raise ValueError(f"out_dir={str(out)!r} holds no finished runs")
    tasks: dict[str, ProxyTask] = {}
    hooks: list[ModelHook] | None = None
    rows = []
    with torch_threads(1):
        for run_id in runs["id"]:
            source = json.loads((out / "runs" / run_id / "run.json").read_text())["config"]["source"]
            key = json.dumps(source, sort_keys=True)
            if key not in tasks:
                tasks[key], hooks = _source_task(out, run_id, source, hooks, task_options)
            sae = load_sae(out / "runs" / run_id / "sae")
            rows.append({"id": run_id, **proxy_scores(sae, tasks[key])})
            logger.info("proxies of run %s: %s", run_id, rows[-1])
    proxies = pd.DataFrame(rows)
    truth = [m for columns in GROUND_TRUTH.values() for m in columns]
    keep = ["id", *runs.attrs["columns"], *[m for m in ("l0", *truth) if m in runs]]
    table = runs[keep].merge(proxies, on="id")
    write_text_atomic(out / "proxies.csv", table.to_csv(index=False))
    return table


def require_columns(table: pd.DataFrame, proxies: Sequence[str]) -> None:
    """A clear error for proxies the table lacks (``scr_top_20`` and ``tpp_top_20`` exist only for SAEs of at
    least 20 latents)."""
    missing = [c for c in proxies if c not in table]
    if missing:
        raise ValueError(f"table lacks the columns {missing}; it has {list(table.columns)}")


def proxy_summary(table: pd.DataFrame, proxies: Sequence[str] = HEADLINE_PROXIES) -> pd.DataFrame:
    """For each proxy (and each ground-truth metric, as a reference): Spearman's rank correlation with each
    ground-truth column of the table (:func:`ground_truth_columns`: F1 and MCC, or board F1 and coverage)
    across all SAEs, and its reseed reliability over the configurations (every column but ``seed``): the mean
    coefficient of variation (std / |mean| over seeds) and the ratio of the mean within-configuration std to
    the std of the configuration means (below 1: the configurations differ more than the seeds)."""
    truths = ground_truth_columns(table)
    require_columns(table, proxies)
    config = [
        c
        for c in ("source", "sae", "architecture", "objective", "width", "target_l0", "k", "coefficient")
        if c in table
    ]
    rows = []
    for metric in (*proxies, *truths):
        groups = table.groupby(config, dropna=False)[metric]
        std, mean = groups.std(ddof=1), groups.mean()
        row = {"metric": metric}
        for truth in truths:
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
