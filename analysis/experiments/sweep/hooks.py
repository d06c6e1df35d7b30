"""A sweep source read from a trained transformer: the activations at one hook of the model in a run folder
written by ``groundtruth beliefs`` or ``groundtruth games``, scored on what that run knows.

In a sweep file::

    [sources.mess3]
    run = "groundtruth-beliefs/mess3-small"   # the run folder (model/ and config.json)
    hook = "blocks.1.hook_resid_post"         # any per-position hook of the model
    sequences = 4096                          # optional: sequences (or games) whose activations feed training

The model runs once over ``sequences`` fresh sequences of the process (or random games) it was trained on;
SAEs train on rows drawn from that cache (:func:`analysis.experiments.skeleton.cached_batches`), so a run's
seed picks the rows, not the sequences. Sequences are drawn with seeds derived from the model (the run's
config and weights), so every run and every hook of one model sees the same ones, and held-out ones scored
on are drawn apart. Scores: L0, FVE, MSE and dead latents on the held-out rows, plus the run's ground truth:
the R² and MSE of the exact beliefs regressed from the SAE's codes (a beliefs run, as
:func:`analysis.experiments.beliefs.score_model` scores its SAE), or coverage and board reconstruction F1 of
the pieces (a games run, :func:`analysis.experiments.games.board_scores`). Downstream of the hook, the SAE is
spliced into the model over the first :data:`SPLICE_SEQUENCES` held-out sequences
(:func:`analysis.metrics.splice.splice_scores`: SAEBench's CE loss recovered and KL, against zero- and
mean-ablation, at each position with a next token: a game's padding is not scored, nor a beliefs run's last
position, whose next token its ``n_ctx``-token sequences do not hold) and, in a beliefs run, each later
layer's belief R² is given clean and spliced (``belief_r2_clean@<hook>``, ``belief_r2_spliced@<hook>``,
:func:`analysis.metrics.splice.spliced_belief_r2`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from analysis.experiments.activations import activations, sae_codes, sae_reconstructions
from analysis.experiments.beliefs import BeliefConfig
from analysis.experiments.games import EvalGames, GameConfig, board_scores, game_inputs
from analysis.experiments.skeleton import cached_batches
from analysis.metrics.beliefs import belief_regression
from analysis.metrics.recovery import dead_latents, fve, l0, mse
from analysis.metrics.splice import splice_scores, spliced_belief_r2
from games import PAD
from groundtruth.processes import process
from toymodels.e2e import Objective
from toymodels.transformer import WEIGHTS_FILE, HookedTransformer, load_transformer

DEFAULT_SEQUENCES = 4096
MIN_EVAL_SEQUENCES = 256  # held-out sequences (or games) at least, however small n_eval is
_FORWARD_TOKENS = 65_536  # token positions per forward pass when collecting activations
SPLICE_SEQUENCES = 256  # held-out sequences (or games) the SAE is spliced into the model over


@dataclass(frozen=True)
class ModelHook:
    """A resolved hook source. ``folder`` says where the run is and is not part of the identity (a moved
    folder keeps its run ids); the run's ``config`` (its config.json) and the hash of the model's weights say
    what it is."""

    folder: str
    kind: str  # "beliefs" or "games"
    config: Mapping[str, Any]
    weights_sha256: str
    hook: str
    sequences: int
    d_in: int

    def identity(self) -> dict:
        return {
            "run": dict(self.config),
            "weights_sha256": self.weights_sha256,
            "hook": self.hook,
            "sequences": self.sequences,
        }

    def seed(self, purpose: str) -> int:
        """The seed of the sequences drawn for ``purpose`` (``"train"``, ``"eval"``): a function of the model
        alone, so every run and every hook of it draws the same sequences."""
        text = json.dumps({"run": self.config, "weights": self.weights_sha256, "purpose": purpose}, sort_keys=True)
        return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)

    def build(self, n_eval: int) -> HookActivations:
        """Load the model, cache the hook's activations over the training sequences and over at least
        ``n_eval`` held-out rows' worth of sequences (and :data:`MIN_EVAL_SEQUENCES`)."""
        folder = Path(self.folder)
        if _sha256(folder / "model" / WEIGHTS_FILE) != self.weights_sha256:
            raise ValueError(f"the model in {self.folder!r} changed since the sweep was resolved; run the sweep again")
        model = load_transformer(folder / "model")
        n_held = max(MIN_EVAL_SEQUENCES, math.ceil(n_eval / model.cfg.n_ctx))
        build = _beliefs if self.kind == "beliefs" else _games
        return build(self, model, n_held)


class HookActivations:
    """A built hook source: training rows drawn from one cache, and a score on held-out sequences.

    ``held_out [N, t, d]`` are the activations over the held-out sequences, ``real [N, t]`` the positions
    that hold a token (not padding after a game's end), ``truth(codes [N, t, m])`` the run's
    ground-truth scores of an SAE's codes there, and ``downstream(sae)`` the scores of the SAE spliced into
    the model. An SAE trained end to end trains on ``tokens``, the training sequences, through ``model``
    (``pad`` the padding token of a game)."""

    def __init__(
        self,
        train: torch.Tensor,
        held_out: torch.Tensor,
        real: torch.Tensor,
        truth: Callable[[torch.Tensor], dict[str, float]],
        downstream: Callable[[Any], dict[str, float]],
        *,
        model: HookedTransformer,
        hook: str,
        tokens: torch.Tensor,
        pad: int | None = None,
    ) -> None:
        self.train, self.held_out, self.real, self.truth = train, held_out, real, truth
        self.downstream = downstream
        self.model, self.hook, self.tokens, self.pad = model, hook, tokens, pad

    def activations(self, batch_size: int, seed: int, *, workers: int = 0):
        """Rows of the cached activations (cheap to draw: ``workers`` is not needed)."""
        return cached_batches(self.train, batch_size, seed)

    def end_to_end(self, objective: str, batch_size: int, seed: int) -> tuple[Any, Objective]:
        """Batches of training sequences, as many as make about ``batch_size`` positions (a seed picks them, as
        it picks the rows of the local stream), and the objective at the hook."""
        sequences = max(1, round(batch_size / self.tokens.shape[1]))
        return cached_batches(self.tokens, sequences, seed), Objective(self.model, self.hook, objective, pad=self.pad)

    def score(self, sae) -> dict[str, Any]:
        """L0, FVE, MSE and dead latents on the held-out rows (:mod:`analysis.metrics.recovery`), with
        ``n_eval`` (how many rows), the run's ground-truth scores and the downstream scores of the splice."""
        codes = sae_codes(sae, self.held_out)
        rows, x = codes[self.real], self.held_out[self.real]
        x_hat = sae_reconstructions(sae, rows)
        generic = {"l0": l0(rows), "fve": fve(x, x_hat), "mse": mse(x, x_hat), "dead": int(dead_latents(rows).sum())}
        return {**generic, "n_eval": len(x), **self.truth(codes), **self.downstream(sae)}


def _splice(model: HookedTransformer, sae) -> HookedTransformer:
    """``model`` on the device of ``sae``'s decoder (where it has one), to splice it in there."""
    w_dec = getattr(sae, "W_dec", None)
    return model.to(w_dec.device) if isinstance(w_dec, torch.Tensor) else model


def _hook_acts(model: HookedTransformer, tokens: torch.Tensor, hook: str) -> torch.Tensor:
    batch = max(1, _FORWARD_TOKENS // tokens.shape[1])
    return activations(model, tokens, [hook], batch)[1][hook]


def _beliefs(spec: ModelHook, model: HookedTransformer, n_held: int) -> HookActivations:
    cfg = BeliefConfig.from_dict({k: v for k, v in spec.config.items() if k != "train"})
    hmm = process(cfg.process)
    tokens = hmm.sample(spec.sequences, cfg.n_ctx, torch.Generator().manual_seed(spec.seed("train"))).tokens
    held = hmm.sample(n_held, cfg.n_ctx, torch.Generator().manual_seed(spec.seed("eval")))
    held_out = _hook_acts(model, held.tokens, spec.hook)

    def truth(codes: torch.Tensor) -> dict[str, float]:
        fit = belief_regression(codes, held.latents, seed=cfg.seed)
        return {"belief_r2": fit.r2, "belief_mse": fit.mse}

    def downstream(sae) -> dict[str, float]:
        spliced, seqs = _splice(model, sae), held.tokens[:SPLICE_SEQUENCES]
        scores: dict[str, float] = splice_scores(spliced, sae, seqs, spec.hook)
        r2 = spliced_belief_r2(spliced, sae, seqs, held.latents[:SPLICE_SEQUENCES], spec.hook, seed=cfg.seed)
        for name, fit in r2.items():
            scores |= {f"belief_r2_clean@{name}": fit["clean"], f"belief_r2_spliced@{name}": fit["spliced"]}
        return scores

    train = _hook_acts(model, tokens, spec.hook)
    real = torch.ones(held_out.shape[:2], dtype=torch.bool)
    return HookActivations(
        train.reshape(-1, train.shape[-1]),
        held_out,
        real,
        truth,
        downstream,
        model=model,
        hook=spec.hook,
        tokens=tokens,
    )


def _games(spec: ModelHook, model: HookedTransformer, n_held: int) -> HookActivations:
    cfg = GameConfig.from_dict({k: v for k, v in spec.config.items() if k != "train"})
    inputs = game_inputs(cfg, spec.sequences, spec.seed("train"))
    held = EvalGames.draw(cfg, n_held, spec.seed("eval"))

    def truth(codes: torch.Tensor) -> dict[str, float]:
        scores = board_scores(codes, held, cfg, everything=False)
        return {"coverage": scores["coverage"], "board_f1": scores["reconstruction_f1"]}

    def downstream(sae) -> dict[str, float]:
        tokens = torch.cat([held.inputs, held.targets[:, -1:]], 1)[:SPLICE_SEQUENCES]  # each input's next move
        return splice_scores(_splice(model, sae), sae, tokens, spec.hook, pad=PAD)

    train = _hook_acts(model, inputs, spec.hook)[inputs != PAD]
    held_out = _hook_acts(model, held.inputs, spec.hook)
    return HookActivations(
        train, held_out, held.inputs != PAD, truth, downstream, model=model, hook=spec.hook, tokens=inputs, pad=PAD
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_hook(table: Mapping[str, Any]) -> ModelHook:
    """The hook source a ``{run = FOLDER, hook = NAME [, sequences = N]}`` table names, checked in full: the
    folder holds a trained model and a beliefs or games config, the model has the hook, ``sequences`` is
    positive. Errors (``ValueError``) name the field and the value."""
    run = table["run"]
    if not isinstance(run, str) or not run:
        raise ValueError(f"run must be the path of a groundtruth beliefs or games run folder, got {run!r}")
    folder = Path(run).expanduser()
    if not folder.is_dir():
        raise ValueError(f"run {run!r}: no such folder")
    weights = folder / "model" / WEIGHTS_FILE
    if not (folder / "config.json").is_file() or not weights.is_file():
        missing = "config.json" if not (folder / "config.json").is_file() else f"trained model (model/{WEIGHTS_FILE})"
        raise ValueError(f"run {run!r} holds no {missing}: not a finished groundtruth beliefs or games run folder")
    kind, config = _run_config(run, folder / "config.json")
    try:
        model = load_transformer(folder / "model")
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"run {run!r}: cannot load the model in model/: {err}") from None
    hooks = model.cfg.sae_hook_names
    hook = table.get("hook")
    if hook not in hooks:
        raise ValueError(f"hook {hook!r} is not a per-position hook of the model in {run!r}; valid: {', '.join(hooks)}")
    sequences = table.get("sequences", DEFAULT_SEQUENCES)
    if not isinstance(sequences, int) or isinstance(sequences, bool) or sequences < 1:
        raise ValueError(f"sequences must be a positive integer, got {sequences!r}")
    with torch.no_grad():
        d_in = model.run_with_cache(torch.zeros(1, 1, dtype=torch.long), [hook])[1][hook].shape[-1]
    return ModelHook(str(folder.resolve()), kind, config, _sha256(weights), hook, sequences, d_in)


def _run_config(run: str, path: Path) -> tuple[str, dict]:
    """The kind of run (``"beliefs"`` or ``"games"``) and its config.json, checked to be that experiment's."""
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"run {run!r}: cannot read config.json: {err}") from None
    if not isinstance(config, dict) or ("process" in config) == ("game" in config):
        raise ValueError(f"run {run!r}: config.json is neither a groundtruth beliefs nor a games run's config")
    kind, experiment = ("beliefs", BeliefConfig) if "process" in config else ("games", GameConfig)
    try:
        experiment.from_dict({k: v for k, v in config.items() if k != "train"})
    except (TypeError, ValueError) as err:
        raise ValueError(f"run {run!r}: config.json is not a {experiment.__name__}: {err}") from None
    return kind, config


__all__ = [
    "DEFAULT_SEQUENCES",
    "MIN_EVAL_SEQUENCES",
    "SPLICE_SEQUENCES",
    "HookActivations",
    "ModelHook",
    "model_hook",
]
