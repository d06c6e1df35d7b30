"""The recipes of the shipped models (:mod:`toymodels.shipped`) and the build that retrains one and
rewrites its package entry: `groundtruth pretrained build NAME`.

A recipe is the experiment config that trains the model, declared once in :data:`RECIPES`; the card
records the command that trains it, its measured numbers, and a small evaluation cheap enough for a test
to rerun on the shipped weights. One :class:`Recipe` subclass per kind of experiment says how to train,
score and evaluate its models (:class:`BeliefRecipe` for `groundtruth beliefs`); a model of another kind (a
board-game model, from :class:`analysis.experiments.games.GameConfig`) is one more subclass and one more
entry.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import shlex
import shutil
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from analysis.experiments import beliefs, games
from analysis.experiments.activations import activations
from analysis.experiments.runs import open_run
from analysis.experiments.sweep.run import versions
from analysis.metrics.beliefs import BeliefData, belief_data
from groundtruth.atomic import atomic_dir
from groundtruth.config import Config
from groundtruth.devices import resolve_device
from groundtruth.entropy import optimal_loss
from groundtruth.processes import process
from groundtruth.threads import torch_threads
from toymodels.shipped import CARD_FILE, check_hash, entry_folder, file_sha256, pretrained
from toymodels.transformer import CONFIG_FILE, WEIGHTS_FILE, HookedTransformer, load_transformer

logger = logging.getLogger(__name__)

SMALL_GAMES = 200  # games of a board-game model's small evaluation: a few seconds on one core
SMALL_SEQUENCES = 4096  # sequences of a belief model's small evaluation: about two seconds on one core


class Recipe(ABC):
    """How one shipped model is trained (``config``, an experiment's config), measured for its card, and
    checked cheaply; one subclass per kind of experiment."""

    config: Config

    @abstractmethod
    def command(self) -> str:
        """The command line that trains this model (and runs the rest of its experiment)."""

    def install(self, run_dir: str | Path, model_dir: Path, *, replace: bool = False) -> Path:
        """Make ``run_dir`` the experiment's run folder of this recipe with the model in ``model_dir`` as its
        trained model, so the experiment loads it instead of training (``replace``: empty a folder holding
        another run first)."""
        out = open_run(run_dir, self.config.model_identity(), replace=replace)
        if not (out / "model").exists():
            with atomic_dir(out / "model") as tmp:
                for file in (CONFIG_FILE, WEIGHTS_FILE):
                    shutil.copyfile(model_dir / file, tmp / file)
        return out

    @abstractmethod
    def open_model_run(
        self, run_dir: Path, *, progress: bool, device: torch.device
    ) -> tuple[Path, HookedTransformer, float | None]:
        """The experiment's ``open_model_run``: the run folder with ``model/`` trained (or loaded) in it,
        the model, and the minutes training took (None when loaded)."""

    @abstractmethod
    def headline(self, model: HookedTransformer) -> dict:
        """The numbers the experiment reports for the model, scored as the experiment scores it."""

    @abstractmethod
    def small_evaluation(self, model: HookedTransformer) -> dict:
        """A seeded evaluation of a few seconds on the CPU whose numbers the card keeps, for tests to rerun."""

    @abstractmethod
    def describe(self, headline: dict) -> str:
        """The headline numbers in one line, for `groundtruth pretrained`."""


def _command(
    words: list[str], cfg: Config, options: tuple[str, ...], always: tuple[str, ...], positional: tuple[str, ...] = ()
) -> str:
    """``words``, the ``positional`` fields' values, and the options (``--field-name``) that give ``cfg``: the
    fields in ``always`` and those that differ from the default config. A field the command line cannot set
    must keep its default."""
    words, default = [*words, *(str(getattr(cfg, name)) for name in positional)], type(cfg)()
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if field.name in positional:
            continue
        if field.name not in options:
            if value != getattr(default, field.name):
                raise ValueError(f"{type(cfg).__name__}.{field.name}={value!r} has no command-line option")
            continue
        if field.name in always or value != getattr(default, field.name):
            flag = "--" + field.name.replace("_", "-")
            words += [flag] if isinstance(value, bool) else [flag, str(value)]
    return shlex.join(words)


@dataclasses.dataclass(frozen=True)
class BeliefRecipe(Recipe):
    """A model of `groundtruth beliefs` (Shai et al. 2024): a transformer trained on a hidden-Markov process,
    scored by its expected loss and by how well its residual stream linearly encodes the exact beliefs."""

    config: beliefs.BeliefConfig

    def command(self) -> str:
        options = ("process", "model", "n_ctx", "steps", "batch_size", "lr", "soft", "sae_width", "seed")
        return _command(["groundtruth", "beliefs"], self.config, options, always=("process", "model", "seed"))

    def open_model_run(
        self, run_dir: Path, *, progress: bool, device: torch.device
    ) -> tuple[Path, HookedTransformer, float | None]:
        return beliefs.open_model_run(self.config, run_dir, progress=progress, device=device)

    def _scores(self, model: HookedTransformer, data: BeliefData) -> dict:
        """Expected loss and the final-layer and all-layers regressions, as :func:`beliefs.run_beliefs` scores them."""
        hmm = process(self.config.process)
        scores, _, _ = beliefs.score_model(model, hmm, data, seed=self.config.seed, only_final=True)
        final, concat = scores["hooks"][scores["final_hook"]], scores["hooks"]["concat"]
        return {
            "sequences": len(data.tokens),
            "exhaustive": data.exhaustive,
            "expected_loss": scores["expected_loss"],
            "final_r2": final["r2"],
            "final_mse": final["mse"],
            "concat_r2": concat["r2"],
            "concat_mse": concat["mse"],
        }

    def headline(self, model: HookedTransformer) -> dict:
        cfg = self.config
        optimum = float(optimal_loss(process(cfg.process), cfg.n_ctx).mean())
        return {**self._scores(model, beliefs.scoring_data(cfg)), "optimal_loss": optimum}

    def small_evaluation(self, model: HookedTransformer) -> dict:
        # One thread: parallel reductions sum in an order that depends on the thread count.
        with torch_threads(1):
            cfg = self.config
            # seed + 5: a stream no step of the experiment draws from (its training batches use seed + 1).
            data = belief_data(process(cfg.process), cfg.n_ctx, max_sequences=SMALL_SEQUENCES, seed=cfg.seed + 5)
            return self._scores(model, data)

    def describe(self, headline: dict) -> str:
        loss, optimum = headline["expected_loss"], headline["optimal_loss"]
        return (
            f"loss {loss:.4f} nats (optimum {optimum:.4f}, {100 * (loss / optimum - 1):+.2f}%), "
            f"belief R² final layer {headline['final_r2']:.4f}, all layers {headline['concat_r2']:.4f}"
        )


@dataclasses.dataclass(frozen=True)
class GameRecipe(Recipe):
    """A model of `groundtruth games` (the setting of Karvonen et al. 2024): a transformer trained on random
    games, scored by its legal-move rate and by how well a linear probe reads the board from each layer."""

    config: games.GameConfig

    def command(self) -> str:
        options = ("max_plies", "model", "steps", "batch_size", "lr", "hook", "sae_width", "sae_steps", "sae_games")
        options += ("seed",)
        return _command(["groundtruth", "games"], self.config, options, ("model", "seed"), positional=("game",))

    def open_model_run(
        self, run_dir: Path, *, progress: bool, device: torch.device
    ) -> tuple[Path, HookedTransformer, float | None]:
        return games.open_model_run(self.config, run_dir, progress=progress, device=device)

    def _scores(self, model: HookedTransformer, n_games: int, seed: int) -> dict:
        """Loss, legal-move rate and the probe of every layer on ``n_games`` held-out games, as
        :func:`games.run_games` scores them; ``best_layer`` is the layer whose probe is best."""
        cfg = self.config
        held = games.EvalGames.draw(cfg, n_games, seed)
        hooks = [games.resid(layer) for layer in range(model.cfg.n_layers)]
        logits, acts = activations(model, held.inputs, hooks, games.BATCH)
        probes = games.probe_layers(acts, held, cfg)
        accuracy = {hook: float(sum(p["per_square"]) / len(p["per_square"])) for hook, p in probes.items()}
        best = max(accuracy, key=accuracy.__getitem__)
        return {
            "games": n_games,
            **games.next_move_scores(logits, held),
            "probe": accuracy,
            "best_layer": best,
            "probe_best": accuracy[best],
            "probe_pieces_f1_best": probes[best]["pieces_f1"],
        }

    def headline(self, model: HookedTransformer) -> dict:
        return self._scores(model, self.config.eval_games, self.config.seed + 1_000_003)  # run_games's games

    def small_evaluation(self, model: HookedTransformer) -> dict:
        with torch_threads(1):  # the same sums on any machine's thread count
            return self._scores(model, SMALL_GAMES, self.config.seed + 5)

    def describe(self, headline: dict) -> str:
        return (
            f"legal-move rate {headline['legal_move_rate']:.4f}, board probe {headline['probe_best']:.4f} "
            f"({headline['best_layer']}), probe's board F1 {headline['probe_pieces_f1_best']:.3f}"
        )


# Shai et al.'s models, as the README trains them: the paper's transformer, seed 0, defaults otherwise.
RECIPES: dict[str, Recipe] = {
    "mess3": BeliefRecipe(beliefs.BeliefConfig(process="mess3", model="paper", seed=0)),
    "rrxor": BeliefRecipe(beliefs.BeliefConfig(process="rrxor", model="paper", seed=0)),
    # The demo's board-game model: 6x6 Othello on the small transformer, 3,000 steps of 128 games (about 30 min
    # on 2 CPU cores).
    "othello6": GameRecipe(games.GameConfig(game="othello6", model="small", steps=3000, lr=3e-3, seed=0)),
}


def recipe(name: str) -> Recipe:
    """The recipe of the shipped model ``name``."""
    if name not in RECIPES:
        raise ValueError(f"name must be one of {list(RECIPES)}, got {name!r}")
    return RECIPES[name]


def install_pretrained(name: str, run_dir: str | Path, *, replace: bool = False) -> Path:
    """Make ``run_dir`` the run folder of ``name``'s recipe holding the shipped model (hash checked), so that
    the recipe's experiment loads it instead of training it: the demo's way to a trained model in seconds."""
    return recipe(name).install(run_dir, check_hash(name), replace=replace)


def small_evaluation(name: str, model: HookedTransformer | None = None) -> dict:
    """The card's small evaluation of ``model`` (default: the shipped ``name``): what the build writes and
    the tests rerun."""
    return recipe(name).small_evaluation(pretrained(name) if model is None else model)


def build_pretrained(
    name: str,
    run_dir: str | Path,
    *,
    folder: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> dict:
    """Train ``name`` from its recipe in ``run_dir`` (a model already trained there is reused, an unfinished
    training resumes), then write its entry ``folder/name`` (default: the package's) atomically: the model,
    measured on the CPU, and ``card.json``. Returns the card; its ``weights_sha256`` is the hash to declare in
    :data:`toymodels.shipped.SHA256`."""
    chosen = recipe(name)
    device = resolve_device(device)  # before anything is written
    threads = torch.get_num_threads()
    run, _, minutes = chosen.open_model_run(Path(run_dir), progress=progress, device=device)
    with atomic_dir(entry_folder(name) if folder is None else Path(folder) / name) as entry:
        for file in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copyfile(run / "model" / file, entry / file)
        model = load_transformer(entry)  # what is measured is what ships
        card = {
            "name": name,
            "recipe": {
                "command": chosen.command(),
                "build": f"groundtruth pretrained build {name}",
                "config_class": type(chosen.config).__name__,
                "config": chosen.config.to_dict(),
                "seed": chosen.config.seed,
            },
            "weights_sha256": file_sha256(entry / WEIGHTS_FILE),
            "parameters": sum(p.numel() for p in model.parameters()),
            "versions": versions(),
            "built": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "trained_on": {"device": str(device), "torch_threads": threads},
            "train_minutes": minutes,  # None: the run folder already held the trained model
            "headline": chosen.headline(model),
            "small_evaluation": small_evaluation(name, model),
        }
        (entry / CARD_FILE).write_text(json.dumps(card, indent=1) + "\n")
    logger.info("wrote the pretrained entry %s; its weights' SHA-256 is %s", name, card["weights_sha256"])
    return card


__all__ = [
    "RECIPES",
    "BeliefRecipe",
    "GameRecipe",
    "Recipe",
    "build_pretrained",
    "install_pretrained",
    "recipe",
    "small_evaluation",
]
