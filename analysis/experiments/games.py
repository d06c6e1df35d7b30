"""`groundtruth games GAME`: train a transformer on random games and score SAEs on its board.

Reproduces the setting of Karvonen et al. (2024) on OthelloGPT-style data (Li et al. 2023; Nanda et al.
2023): a transformer learns to predict the next move of uniformly random legal games; a linear probe per
square reads mine/theirs/empty from each layer; SAEs trained on a hook (by default the best layer's
residual stream) are scored as board-property classifiers (coverage and board reconstruction, :mod:`analysis.metrics.board`), next to
three baselines scored the same way: SAEs on the same architecture at random initialisation, the raw MLP
neurons of that block, and the probe itself. Every game registered in :mod:`games` runs the same way; chess
on UCI move tokens (one token per move; the board is the piece on each square, 13 classes). Everything lands in one folder: the model, the SAEs,
``results.json`` and the figures; a rerun with the same model options loads the trained model, and SAEs
on another hook or with other settings are trained next to the earlier ones.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from analysis.experiments.activations import activations, sae_codes
from analysis.experiments.recovery import sae_config
from analysis.experiments.runs import open_run
from analysis.experiments.skeleton import sae_on_cached, trained_model
from analysis.metrics.board import class_f1, linear_probe, score_board, square_classes
from analysis.metrics.splits import sequence_split
from games import GAMES, PAD, Game, game_options, get_game
from groundtruth.atomic import write_text_atomic
from groundtruth.checks import check_int, check_real
from groundtruth.config import Config
from groundtruth.devices import resolve_device
from toymodels.sae import SAEConfig, architectures, load_sae, save_sae, saved_config
from toymodels.training import TrainConfig
from toymodels.transformer import (
    HookedTransformer,
    TransformerConfig,
    next_token_loss,
)

logger = logging.getLogger(__name__)

BATCH = 256  # games per forward pass when collecting activations

# Sizes by name. "paper" is OthelloGPT's and the board-game SAE paper's 8 layers × 512 (a GPU recipe).
MODELS: dict[str, dict[str, int]] = {
    "paper": {"n_layers": 8, "d_model": 512, "n_heads": 8, "d_mlp": 2048},
    "small": {"n_layers": 4, "d_model": 128, "n_heads": 4, "d_mlp": 512},
    "tiny": {"n_layers": 2, "d_model": 32, "n_heads": 2, "d_mlp": 128},
}


MODEL_FIELDS = ("game", "model", "max_plies", "steps", "batch_size", "lr", "soft", "seed")


@dataclass(frozen=True)
class GameConfig(Config):
    """One board-game experiment. The fields that make the model (:data:`MODEL_FIELDS`) identify its
    output folder; the rest (evaluation, the hook, the SAEs) can change between runs in one folder.

    ``saes``: (variant, sparsity knob) pairs, each trained on the trained model and on the random-init
    one (the knob is ``k`` for TopK-style SAEs, else the sparsity coefficient). ``hook``: the hook the
    SAEs read, any per-position one of the transformer's (``blocks.1.mlp.hook_post``, ...); empty picks
    the ``hook_resid_post`` of the layer where the probe is best. ``soft``: train on the exact next-move
    distribution of random play instead of the move played (same expected gradient, less noise: fewer
    games for the same model).
    """

    game: str = "othello"
    model: str = "small"
    max_plies: int = 100  # chess: plies per game, the model's context (UCI tokens, one per move)
    steps: int = 4000
    batch_size: int = 128
    lr: float = 2e-3
    soft: bool = True  # train on the exact next-move distribution (uniform over legal moves), not sampled moves
    eval_games: int = 2000
    sae_games: int = 4000
    sae_width: int = 1024
    sae_steps: int = 2000
    saes: tuple[tuple[str, float], ...] = (("topk", 8), ("topk", 32), ("batchtopk", 16), ("standard", 3.0))
    hook: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.game not in GAMES:
            raise ValueError(f"game must be one of {sorted(GAMES)}, got {self.game!r}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {self.model!r}")
        for name in ("max_plies", "steps", "batch_size", "sae_games", "sae_width", "sae_steps"):
            check_int(name, getattr(self, name))
        check_int("eval_games", self.eval_games, 4)
        check_int("seed", self.seed, minimum=0)
        if self.hook and self.hook not in self.transformer().sae_hook_names:
            raise ValueError(f"hook must be one of {self.transformer().sae_hook_names} (or empty), got {self.hook!r}")
        check_real("lr", self.lr, 0.0, low_open=True)
        for variant, knob in self.saes:
            if variant not in architectures():
                raise ValueError(f"saes: variant must be one of {architectures()}, got {variant!r}")
            check_real(f"saes: {variant} knob", knob, 0.0, low_open=True)

    def model_identity(self) -> dict:
        """The fields that make the trained model, and its training recipe: a folder holding another
        identity is another model."""
        return {**{name: getattr(self, name) for name in MODEL_FIELDS}, "train": self.train().identity()}

    def source(self) -> Game:
        """The game, made with the options of this config that it takes (chess: ``max_plies``)."""
        offered = {"max_plies": self.max_plies}
        return get_game(self.game, **{k: v for k, v in offered.items() if k in game_options(self.game)})

    @property
    def n_ctx(self) -> int:
        return self.source().n_ctx

    @property
    def board(self) -> tuple[str, ...]:
        """The classes, one per square, that the probe reads and coverage scores, the empty one included
        (Othello's ``empty``, chess's ``blank``)."""
        return self.source().board.classes

    @property
    def pieces(self) -> tuple[str, ...]:
        """The board without its empty class: what board reconstruction F1 scores, as Karvonen et al. (2024)
        report it (their blank-masked boards). With empty squares in, the position in the game alone
        predicts much of an early board, and a random-init model scores 0.3 instead of under 0.1."""
        return self.source().board.pieces

    def transformer(self) -> TransformerConfig:
        game = self.source()
        return TransformerConfig(**MODELS[self.model], n_ctx=game.n_ctx, d_vocab=game.n_tokens, seed=self.seed)

    def batches(self) -> Iterator:
        return self.source().training_batches(self.batch_size, soft=self.soft, seed=self.seed + 1)

    def train(self) -> TrainConfig:
        return TrainConfig(
            steps=self.steps,
            lr=self.lr,
            betas=(0.9, 0.98),
            warmup_steps=min(100, self.steps // 10),
            checkpoint_every=max(1, self.steps // 10),
        )

    def sae(self, variant: str, knob: float, d_in: int) -> SAEConfig:
        return sae_config(variant, knob, d_in, self.sae_width, self.seed)


@dataclass(frozen=True)
class EvalGames:
    """Held-out games: model inputs ``[n, t]``, next-move targets ``[n, t]``, labels ``[n, t, K]`` of the
    position each input token leaves (for the player who moves next), and the legal next tokens as sorted
    keys ``position × d_vocab + token`` (position = game × t + index)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor
    names: tuple[str, ...]
    legal: torch.Tensor
    d_vocab: int

    @classmethod
    def draw(cls, cfg: GameConfig, n: int, seed: int) -> EvalGames:
        game = cfg.source()
        games, t, d_vocab = game.random_games(n, np.random.default_rng(seed)), game.n_ctx, game.n_tokens
        batch = game.token_batch(games)
        g, i, token = game.legal_tokens(games, t)  # the next player's moves after each input
        keys = torch.from_numpy(((g * t + i) * d_vocab + token).astype(np.int64)).sort().values
        tokens = batch.tokens
        return cls(tokens[:, :t], tokens[:, 1 : t + 1], batch.latents[:, :t], batch.names, keys, d_vocab)


def game_inputs(cfg: GameConfig, n: int, seed: int) -> torch.Tensor:
    """Model inputs ``[n, n_ctx]`` of ``n`` fresh random games (``PAD`` after a game's end), without their
    labels: SAE training needs none, and labelling is the slow part of :meth:`EvalGames.draw`."""
    game = cfg.source()
    return torch.from_numpy(game.tokenize(game.random_games(n, np.random.default_rng(seed))))[:, : game.n_ctx]


def legal_move_rate(logits: torch.Tensor, games: EvalGames) -> float:
    """Fraction of top-1 predictions that are legal next moves, over positions where the game goes on
    (a position with no legal move is the end of the game)."""
    n, t = games.inputs.shape
    position = torch.arange(n * t).reshape(n, t)
    going = torch.zeros(n * t, dtype=torch.bool)
    going[games.legal // games.d_vocab] = True
    ok = torch.isin(position * games.d_vocab + logits.argmax(-1), games.legal)
    return float((ok & going.reshape(n, t)).sum() / going.sum())


def next_move_scores(logits: torch.Tensor, games: EvalGames) -> dict[str, float]:
    """The next-move loss over real moves (not padding) and the :func:`legal_move_rate` of ``logits``."""
    going = games.targets != PAD
    loss = float(next_token_loss(logits[going][None], games.targets[going][None]))
    return {"loss": loss, "legal_move_rate": legal_move_rate(logits, games)}


def probe_layers(acts: dict[str, torch.Tensor], games: EvalGames, cfg: GameConfig) -> dict[str, dict]:
    """A linear probe for the board classes on each hook, fitted on half the games and scored on the
    other half (positions after a game's end are left out): its held-out accuracy per square
    (``per_square``) and the F1 of the pieces it predicts (``pieces_f1``, scored as board reconstruction)."""
    classes = square_classes(games.labels, games.names, cfg.board)
    held = sequence_split(len(classes), 0.5, torch.Generator().manual_seed(cfg.seed))[:, None]
    real = classes[..., 0] >= 0
    pieces = [cfg.board.index(c) for c in cfg.pieces]
    out = {}
    for hook, x in acts.items():
        fit, test = (x[~held & real], classes[~held & real]), (x[held & real], classes[held & real])
        probe = linear_probe(*fit, *test, len(cfg.board))
        out[hook] = {
            "per_square": probe.per_square.tolist(),
            "pieces_f1": class_f1(probe.predict(test[0]), test[1], pieces),
        }
        logger.info("probe on %s: accuracy %.4f, pieces F1 %.4f", hook, probe.accuracy, out[hook]["pieces_f1"])
    return out


def resid(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def _neurons_near(hook: str, n_layers: int) -> str:
    """The MLP neurons compared with SAEs on ``hook``: its block's (the first block's for the
    embedding, the last block's after the blocks)."""
    layer = int(hook.split(".")[1]) if hook.startswith("blocks.") else 0 if hook == "hook_embed" else n_layers - 1
    return f"blocks.{layer}.mlp.hook_post"


def board_scores(features: torch.Tensor, games: EvalGames, cfg: GameConfig, *, everything: bool = True) -> dict:
    """Board scores of ``features [games, t, m]`` (an SAE's codes, neurons) on held-out ``games``: coverage of
    the board and board reconstruction of its pieces (Karvonen et al. 2024), and with ``everything`` the
    reconstruction of the whole board, empty squares included, and coverage over every labelled property
    (the report's extra columns; they cost about as much again, so a sweep leaves them out)."""
    board = score_board(
        features, games.labels, games.names, properties=cfg.board, seed=cfg.seed, reconstruct=everything
    )
    pieces = score_board(features, games.labels, games.names, properties=cfg.pieces, seed=cfg.seed)
    scores = {
        "coverage": board.coverage.value,
        "coverage_threshold": board.coverage.threshold,
        "reconstruction_f1": pieces.reconstruction.f1,
        "reconstruction_threshold": pieces.reconstruction.threshold,
        "reconstruction_by_position": pieces.reconstruction.per_position.tolist(),
        "f1_by_property": board.property_f1(),
    }
    if everything:
        scores["reconstruction_f1_with_empty"] = board.reconstruction.f1
        every = score_board(features, games.labels, games.names, seed=cfg.seed, reconstruct=False)
        scores["coverage_all_properties"] = every.coverage.value
    return scores


def _sae_data(model: HookedTransformer, hook: str, cfg: GameConfig) -> torch.Tensor:
    """Activations at ``hook`` over fresh games (positions of real moves, not padding), to train SAEs on."""
    inputs = game_inputs(cfg, cfg.sae_games, cfg.seed + 2)
    return activations(model, inputs, [hook], BATCH)[1][hook][inputs != PAD]


def _sae(data, cfg: GameConfig, variant: str, knob: float, path: Path, progress: bool, device: torch.device):
    """Train (or load) one SAE on ``device``; ``data()`` gives its training activations (made only when one
    is trained)."""
    if (path / "cfg.json").exists():
        trained = saved_config(path)
        if trained is not None and trained == cfg.sae(variant, knob, trained.d_in):
            return load_sae(path, device)
        logger.info("retraining %s: it was trained under other SAE defaults", path)
    acts = data()
    train = TrainConfig(steps=cfg.sae_steps, lr=1e-3)
    sae_cfg = cfg.sae(variant, knob, acts.shape[1])
    sae = sae_on_cached(acts, sae_cfg, train, cfg.seed + 3, progress=progress, device=device)
    save_sae(sae, path)
    return sae


def open_model_run(
    cfg: GameConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    replace: bool = False,
    device: str | torch.device = "cpu",
) -> tuple[Path, HookedTransformer, float | None]:
    """The run folder of ``cfg``'s model (its ``config.json`` is :meth:`GameConfig.model_identity`) with the
    trained model in ``model/``, trained now or loaded, on ``device``, and the minutes training took (None when
    loaded): the first step of :func:`run_games`, and all a sweep reads a hook from
    (:mod:`analysis.experiments.sweep.hooks`). The device is not part of the run's identity: a model trained
    on one device is reused on another."""
    device = resolve_device(device)  # before anything is written
    out = open_run(out_dir, cfg.model_identity(), replace=replace)
    model, minutes = trained_model(out, cfg.transformer(), cfg.batches, cfg.train(), progress=progress, device=device)
    return out, model, minutes


def run_games(
    cfg: GameConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    replace: bool = False,
    device: str | torch.device = "cpu",
) -> dict:
    """Train (or load) the model, probe every layer, train (or load) and score the SAEs and baselines,
    write ``results.json`` and the figures (of this run's config). A folder holding another model
    (:meth:`GameConfig.model_identity`) is refused, or with ``replace`` emptied first; in a folder with
    the same model, SAEs of other settings or on another hook are trained next to the ones there. The models
    and SAEs train and run on ``device`` (probes and scores on the CPU); the device is not part of the
    run's identity, so a model or SAE trained on one device is reused on another."""
    started = time.perf_counter()
    out, model, minutes = open_model_run(cfg, out_dir, progress=progress, replace=replace, device=device)
    device = model.device
    tcfg = cfg.transformer()
    untrained = HookedTransformer(tcfg).to(device)
    games = EvalGames.draw(cfg, cfg.eval_games, cfg.seed + 1_000_003)
    hooks = ["blocks.0.hook_resid_pre"] + [resid(layer) for layer in range(tcfg.n_layers)]
    hooks += [cfg.hook] if cfg.hook and cfg.hook not in hooks else []
    results: dict = {"config": asdict(cfg), "transformer": tcfg.to_dict(), "train_minutes": minutes}
    results["board"], results["pieces"] = list(cfg.board), list(cfg.pieces)
    acts = {}
    for name, net in (("trained", model), ("untrained", untrained)):
        logits, acts[name] = activations(net, games.inputs, hooks, BATCH)
        results[name] = next_move_scores(logits, games)

    def probe(name: str, probed: list[str]) -> None:
        probes = probe_layers({h: acts[name][h] for h in probed}, games, cfg)
        results[name]["probe"] = {h: float(np.mean(p["per_square"])) for h, p in probes.items()}
        results[name]["probe_by_square"] = {h: p["per_square"] for h, p in probes.items()}
        results[name]["probe_pieces_f1"] = {h: p["pieces_f1"] for h, p in probes.items()}

    probe("trained", hooks)  # every layer, to find where the board is
    probes = results["trained"]["probe"]
    hook = cfg.hook or max((resid(i) for i in range(tcfg.n_layers)), key=probes.__getitem__)
    results["hook"] = hook
    probe("untrained", [hook])  # the baseline where it is compared
    del acts
    results["probe_board_f1"] = {name: results[name]["probe_pieces_f1"][hook] for name in ("trained", "untrained")}
    results["saes"] = []
    neurons = _neurons_near(hook, tcfg.n_layers)
    saes = out / "saes" / f"{hook}-w{cfg.sae_width}-{cfg.sae_steps}steps-{cfg.sae_games}games"
    for name, net in (("trained", model), ("untrained", untrained)):
        _, acts = activations(net, games.inputs, [hook, neurons], BATCH)
        results[name]["neurons"] = board_scores(acts[neurons], games, cfg)
        data = functools.cache(lambda net=net: _sae_data(net, hook, cfg))  # one set of games for all its SAEs
        for variant, knob in cfg.saes:
            sae = _sae(data, cfg, variant, knob, saes / f"{name}-{variant}-{knob:g}", progress, device)
            codes = sae_codes(sae, acts[hook])
            row = {"model": name, "variant": variant, "knob": knob, "l0": float((codes != 0).sum(-1).float().mean())}
            results["saes"].append({**row, **board_scores(codes, games, cfg)})
            logger.info("%s %s %g: %s", name, variant, knob, results["saes"][-1]["reconstruction_f1"])
    results["seconds"] = time.perf_counter() - started
    write_text_atomic(out / "results.json", json.dumps(results, indent=1))
    from analysis.figures.games import make_game_figures  # matplotlib: only here

    make_game_figures(out, results)
    return results


def games_report(results: dict) -> str:
    """Plain-text tables of a :func:`run_games` result."""
    t, u = results["trained"], results["untrained"]
    hook = results["hook"]
    minutes = results["train_minutes"]
    lines = [
        f"{results['config']['game'].capitalize()}, {results['transformer']['n_layers']} layers x "
        f"{results['transformer']['d_model']}" + ("" if minutes is None else f", trained in {minutes:.1f} min"),
        f"next-move loss {t['loss']:.4f} nats (random init {u['loss']:.4f}); legal-move rate {t['legal_move_rate']:.4f} "
        f"(random init {u['legal_move_rate']:.4f})",
        "",
        f"linear probe per square, {_board_name(results['board'])} accuracy (held-out games): "
        + "  ".join(
            f"{h.split('.')[1] if h != 'blocks.0.hook_resid_pre' else 'embed'}:{acc:.3f}"
            for h, acc in t["probe"].items()
        ),
        f"SAEs read {hook}; held-out games. coverage: {_board_name(results['board'])} on {len(t['probe_by_square'][hook])} squares; board F1: "
        f"reconstruction of the pieces ({_pieces_name(results['pieces'])}), and of the whole board with its empty squares",
        "",
        f"{'features':28s} {'model':>9} {'L0':>7} {'coverage':>9} {'board F1':>9} {'w/ empty':>9} {'cov. (all)':>10}",
    ]
    rows = [(f"{r['variant']} {r['knob']:g}", r["model"], f"{r['l0']:7.1f}", r) for r in results["saes"]]
    rows += [("MLP neurons", name, "", results[name]["neurons"]) for name in ("trained", "untrained")]
    for features, model, l0, r in rows:
        lines.append(
            f"{features:28s} {model:>9} {l0:>7} {r['coverage']:9.3f} {r['reconstruction_f1']:9.3f} "
            f"{r['reconstruction_f1_with_empty']:9.3f} {r['coverage_all_properties']:10.3f}"
        )
    for name, f1 in results["probe_board_f1"].items():
        lines.append(f"{'linear probe':28s} {name:>9} {'':>7} {'':>9} {f1:9.3f} {results[name]['probe'][hook]:9.3f}")
    return "\n".join(lines)


def _board_name(board: list[str]) -> str:
    return "/".join(board) if len(board) <= 3 else f"piece ({len(board)} classes)"


def _pieces_name(pieces: list[str]) -> str:
    return "/".join(pieces) if len(pieces) <= 3 else f"{len(pieces)} classes"
