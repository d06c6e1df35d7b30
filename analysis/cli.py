"""The ``groundtruth`` command line (the console script runs it through :mod:`groundtruth_entry.cli`).

Each subcommand declares its options when it is used, so ``groundtruth --help`` lists the commands
without importing an experiment (or torch). The options every experiment shares (``--seed``, ``--out``,
``--no-progress``) are declared once, in :func:`_run_options`. Argument errors (a bad value, a factory
the suite cannot call, an output folder holding another run) end in one line and exit status 2; any
other exception raised while a command runs is a bug and keeps its traceback. Ctrl-C in a command
that writes a folder says what the folder holds and which command resumes (exit status 130).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

_T = TypeVar("_T")


class _UsageError(Exception):
    """An argument the command cannot use, found once the command runs: reported in one line, exit status 2."""


class _Interrupted(Exception):
    """Ctrl-C while a command was writing a folder; the message says what the folder holds and what a
    rerun of the same command does with it."""


class _Command(argparse.ArgumentParser):
    """A subcommand whose options are declared by ``declare(parser)`` when it is parsed or its help is
    shown: listing the commands imports none of the modules their options come from."""

    def __init__(self, *args, declare: Callable[[argparse.ArgumentParser], None], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._declare: Callable[[argparse.ArgumentParser], None] | None = declare

    def _declared(self) -> None:
        if self._declare is not None:
            declare, self._declare = self._declare, None
            declare(self)

    def parse_known_args(self, args=None, namespace=None):
        self._declared()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._declared()
        return super().format_help()


def _number(kind: type[_T], low: _T, *, open_low: bool = False) -> Callable[[str], _T]:
    """An argparse type: a ``kind`` (int or float) >= ``low`` (> ``low`` with ``open_low``), checked while
    parsing because no config checks it before the command starts working; anything else is a usage error
    naming the value."""
    wanted = f"{'an integer' if kind is int else 'a number'} {'>' if open_low else '>='} {low}"

    def parse(text: str) -> _T:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if not (value > low if open_low else value >= low):  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    return parse


def _run_options(parser: argparse.ArgumentParser, *, seeds: str, out: str) -> None:
    """The options every experiment takes: what its seed drives (``seeds``) and its default folder (``out``)
    go into the help."""
    parser.add_argument("--seed", type=_number(int, 0), default=0, help=f"seed for {seeds} (default: %(default)s)")
    parser.add_argument("--out", type=Path, metavar="DIR", help=f"output folder (default: {out})")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _model_options(parser: argparse.ArgumentParser, models: dict, defaults, *, sizes: str, unit: str) -> None:
    """The options every experiment that trains a transformer takes: its size by name (``sizes`` describes
    them), steps, batch size (of ``unit``) and learning rate, with ``defaults`` (the experiment's config)."""
    parser.add_argument(
        "--model",
        choices=sorted(models),
        default=defaults.model,
        help=f"size by name; {sizes} (default: %(default)s)",
    )
    parser.add_argument("--steps", type=int, default=defaults.steps, help="training steps (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help=f"{unit} per step (default: %(default)s)"
    )
    parser.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate (default: %(default)s)")


def _device_option(parser: argparse.ArgumentParser, default: str | None = "auto", fallback: str = "") -> None:
    """``--device``: where a command trains and scores (``auto``: CUDA when present)."""
    shown = "%(default)s" if default is not None else fallback
    parser.add_argument(
        "--device",
        default=default,
        metavar="DEVICE",
        help=f"auto (CUDA when present), cpu, cuda or cuda:N (default: {shown})",
    )


def _device(text: str):
    """``--device`` as a :class:`torch.device` this machine has (``auto``: CUDA when present), resolved where
    the command runs; one it lacks is an argument error naming it, before anything is written."""
    from groundtruth.devices import resolve_device  # imports torch: only once a command runs

    try:
        return resolve_device(text)
    except ValueError as err:
        raise _UsageError(f"--device: {err}") from None


def _config(cls: type[_T], **fields: object) -> _T:
    """``cls(**fields)`` for a config made from the command line: a value it refuses is an argument error."""
    try:
        return cls(**fields)
    except ValueError as err:
        raise _UsageError(str(err)) from None


def _saved(folder: Path) -> str:
    """What an interrupted run left in ``folder``, in words."""
    found = []
    if (folder / "model").is_dir():
        found.append("the trained model (model/)")
    for name, what in (("checkpoints", "the model"), ("sae-checkpoints", "the SAE")):
        meta = folder / name / "latest" / "trainer.json"
        if meta.exists() and not (name == "checkpoints" and (folder / "model").is_dir()):
            step = json.loads(meta.read_text())["step"]
            found.append(f"{what}'s training checkpoint at step {step:,} ({name}/latest/)")
    if saes := len(list(folder.glob("saes/**/cfg.json"))):
        found.append(f"{saes} trained SAE{'s' if saes > 1 else ''} (saes/)")
    if shards := len(list(folder.glob("shard-*.npz"))):
        found.append(f"{shards} shard{'s' if shards > 1 else ''} of games")
    if runs := len(list(folder.glob("runs/*/run.json"))):
        found.append(f"{runs} finished run{'s' if runs > 1 else ''} (runs/)")
    if unfinished := len(list(folder.glob("work/*/latest"))):
        found.append(f"{unfinished} unfinished run{'s' if unfinished > 1 else ''}' checkpoints (work/)")
    if (folder / "results.json").exists():
        found.append("results.json")
    return f"{folder}/: {', '.join(found) if found else 'nothing yet'}"


@contextlib.contextmanager
def _writing(folders: list[Path], rerun: str) -> Iterator[None]:
    """Around an experiment that writes ``folders``: Ctrl-C becomes a message saying what they hold and
    what a rerun does (``rerun``), and a folder holding another run becomes an argument error (``--out``)."""
    from groundtruth.checks import FolderConflict  # imports torch: only once a command runs

    try:
        yield
    except FolderConflict as err:
        raise _UsageError(str(err)) from None
    except KeyboardInterrupt:
        saved = "\n".join(f"  {_saved(folder)}" for folder in folders)
        raise _Interrupted(f"saved so far:\n{saved}\nrunning the same command again {rerun}") from None


_RESUMES_TRAINING = "continues an unfinished model training from its last checkpoint"


def _demo_options(parser: argparse.ArgumentParser) -> None:
    _run_options(parser, seeds="data and SAEs", out="groundtruth-demo")
    _device_option(parser)
    parser.add_argument("--quick", action="store_true", help="a much smaller run, for smoke tests")
    parser.add_argument(
        "--train",
        action="store_true",
        help="train the Othello model by its recipe (about 30 min on 2 cores) instead of loading the shipped one",
    )


def _demo(args: argparse.Namespace) -> int:
    from analysis.experiments.beliefs import belief_report
    from analysis.experiments.demo import board_finding, published_ordering, run_demo
    from analysis.experiments.games import games_report
    from analysis.experiments.sweep.results import format_table, summarise

    out = args.out or Path("groundtruth-demo")
    device = _device(args.device)
    started = time.perf_counter()
    print(
        f"groundtruth demo: SAEs at matched L0 on known features, Mess3 beliefs, Othello boards -> {out}/ (on {device})"
    )
    rerun = (
        "keeps the finished SAE runs in superposition/, and in beliefs/ and othello/ it reuses the models "
        f"and SAEs trained with the same options and {_RESUMES_TRAINING}"
    )
    folders = [out / "superposition", out / "beliefs", out / "othello"]
    with _writing(folders, rerun):
        results = run_demo(
            out, seed=args.seed, quick=args.quick, train=args.train, progress=not args.no_progress, device=device
        )
    print()
    print("Superposition: the SAE family on synthsaebench-small at matched L0 (SynthSAEBench's protocol)")
    print(format_table(summarise(results.superposition)))
    print(published_ordering(results.superposition)[1])
    print()
    print(belief_report(results.beliefs))
    print()
    print(games_report(results.othello))
    print(board_finding(results.othello)[1])
    print()
    tables = (folders[0] / "results.csv", folders[1] / "results.json", folders[2] / "results.json")
    print(f"results:  {', '.join(map(str, tables))}")
    for folder in (f if f.name != "superposition" else f / "figures" for f in folders):
        print(f"figures:  {', '.join(sorted(p.name for p in folder.glob('*.png')))} (and PDF) in {folder}/")
    print(f"SAEs:     {out / 'superposition' / 'runs'}/*/sae (SAELens layout: SAE.load_from_disk works on each)")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


def _check_sae_options(parser: argparse.ArgumentParser) -> None:
    from analysis.conformance import PROFILES, PROPERTIES

    names = [p.name for p in PROPERTIES]
    parser.add_argument(
        "factory",
        help="module:callable returning an SAE for (d_in, d_sae, *, seed), e.g. toymodels.sae.factories:topk",
    )
    parser.add_argument(
        "--profile", choices=sorted(PROFILES), default="fast", help="how hard to look (default: %(default)s)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=names, metavar="PROPERTY", help=f"run only these properties: {', '.join(names)}"
    )


def _check_sae(args: argparse.Namespace) -> int:
    from analysis.conformance import check_factory, check_sae, load_factory, results_table

    try:
        factory = load_factory(args.factory)
    except ValueError as err:  # not module:callable, or nothing there
        raise _UsageError(str(err)) from None
    try:
        check_factory(factory)
    except TypeError as err:  # a signature the suite cannot call
        raise _UsageError(str(err)) from None
    print(f"groundtruth check-sae {args.factory} --profile {args.profile}")
    results = check_sae(factory, args.profile, tuple(args.only) if args.only else None)
    print(results_table(results))
    return 1 if any(r.status == "failed" for r in results) else 0


def _beliefs_options(parser: argparse.ArgumentParser) -> None:
    from analysis.experiments.beliefs import MODELS, BeliefConfig
    from groundtruth.processes import PROCESSES

    defaults = BeliefConfig()
    parser.add_argument(
        "--process",
        choices=sorted(PROCESSES),
        default=defaults.process,
        help="process from the zoo; mess3 is the paper's (x 0.05, alpha 0.85) (default: %(default)s)",
    )
    _model_options(parser, MODELS, defaults, sizes="paper = 4 layers, d_model 64, 1 head, d_mlp 256", unit="sequences")
    parser.add_argument("--n-ctx", type=int, default=defaults.n_ctx, help="context length (default: %(default)s)")
    parser.add_argument("--soft", action="store_true", help="train on exact next-token distributions")
    parser.add_argument("--sae-width", type=int, default=0, help="also score a TopK SAE of this width (0: none)")
    _run_options(parser, seeds="weights, data and split", out="groundtruth-beliefs/PROCESS-MODEL")
    _device_option(parser)


def _beliefs(args: argparse.Namespace) -> int:
    from analysis.experiments.beliefs import BeliefConfig, belief_report, run_beliefs

    cfg = _config(
        BeliefConfig,
        process=args.process,
        model=args.model,
        n_ctx=args.n_ctx,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        soft=args.soft,
        sae_width=args.sae_width,
        seed=args.seed,
    )
    out = args.out or Path(f"groundtruth-beliefs/{cfg.process}-{cfg.model}{'-soft' if cfg.soft else ''}")
    device = _device(args.device)
    started = time.perf_counter()
    print(f"groundtruth beliefs: {cfg.process} on the {cfg.model} transformer -> {out}/ (on {device})")
    reused = "the trained model and a finished SAE" if cfg.sae_width else "the trained model"
    rerun = f"reuses {reused}, {_RESUMES_TRAINING}, and scores again"
    with _writing([out], rerun):
        results = run_beliefs(cfg, out, progress=not args.no_progress, device=device)
    print()
    print(belief_report(results))
    print()
    print(f"results:  {out / 'results.json'}")
    print(f"figures:  {', '.join(sorted(p.name for p in out.glob('*.png')))} (and PDF) in {out}/")
    print(f"model:    {out / 'model'}/ (load_transformer; a rerun with the same options reuses it)")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


def _games_options(parser: argparse.ArgumentParser) -> None:
    from analysis.experiments.games import MODELS as GAME_MODELS
    from analysis.experiments.games import GameConfig
    from games import GAMES

    game_defaults = GameConfig()
    parser.add_argument("game", choices=sorted(GAMES), help="which game")
    parser.add_argument("--generate", type=_number(int, 1), metavar="N", help="write N random games and stop")
    parser.add_argument(
        "--shard-size", type=_number(int, 1), default=100_000, help="games per shard file (default: %(default)s)"
    )
    parser.add_argument(
        "--max-plies",
        type=_number(int, 1),
        default=100,
        help="chess: ply cap per game, the model's context (default: %(default)s)",
    )
    parser.add_argument(
        "--capture-weight",
        type=_number(float, 0.0, open_low=True),
        default=1.0,
        help="chess: weight of captures against other moves (default: 1)",
    )
    _model_options(
        parser, GAME_MODELS, game_defaults, sizes="paper = 8 layers x 512 (a GPU recipe), small = 4 x 128", unit="games"
    )
    parser.add_argument(
        "--hook",
        default="",
        help="hook the SAEs read, e.g. blocks.1.mlp.hook_post (default: the best probe layer's resid_post)",
    )
    for flag, what in (
        ("width", "latents per SAE"),
        ("steps", "SAE training steps"),
        ("games", "games of SAE training data"),
    ):
        parser.add_argument(
            f"--sae-{flag}",
            type=int,
            default=getattr(game_defaults, f"sae_{flag}"),
            help=f"{what} (default: %(default)s)",
        )
    _run_options(parser, seeds="games, weights and splits", out="groundtruth-games/GAME-MODEL or GAME-data")
    _device_option(parser)


def _games(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.generate is not None:
        from games import game_options
        from games.datasets import write_shards

        out = args.out or Path(f"groundtruth-games/{args.game}-data")
        offered = {"max_plies": args.max_plies, "capture_weight": args.capture_weight}
        options = {k: v for k, v in offered.items() if k in game_options(args.game)}
        print(f"groundtruth games {args.game}: {args.generate:,} random games -> {out}/")
        with _writing([out], "keeps these shards and writes the missing ones"):
            paths = write_shards(
                args.game,
                args.generate,
                out,
                shard_size=args.shard_size,
                seed=args.seed,
                progress=not args.no_progress,
                **options,
            )
        print(f"{len(paths)} shards in {out}/ (games.datasets.read_shards reads them; a rerun resumes)")
        print(f"total {time.perf_counter() - started:.0f} s")
        return 0
    from analysis.experiments.games import GameConfig, games_report, run_games

    cfg = _config(
        GameConfig,
        game=args.game,
        model=args.model,
        max_plies=args.max_plies,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        sae_games=args.sae_games,
        sae_width=args.sae_width,
        sae_steps=args.sae_steps,
        hook=args.hook,
        seed=args.seed,
    )
    out = args.out or Path(f"groundtruth-games/{cfg.game}-{cfg.model}")
    device = _device(args.device)
    print(f"groundtruth games {cfg.game}: the {cfg.model} transformer, probes and SAEs -> {out}/ (on {device})")
    rerun = f"reuses the trained model and SAEs, {_RESUMES_TRAINING}, trains the missing SAEs and scores again"
    with _writing([out], rerun):
        results = run_games(cfg, out, progress=not args.no_progress, device=device)
    print()
    print(games_report(results))
    print()
    print(f"results:  {out / 'results.json'}")
    print(f"figures:  {', '.join(sorted(p.name for p in out.glob('*.png')))} (and PDF) in {out}/")
    print(f"model:    {out / 'model'}/, SAEs: {out / 'saes'}/ (a rerun with the same model options reuses them)")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


def _sweep_options(parser: argparse.ArgumentParser) -> None:
    from analysis.experiments.sweep import EXECUTORS
    from analysis.sweeps import SHIPPED

    actions = parser.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=argparse.ArgumentParser
    )
    run = actions.add_parser(
        "run",
        help="train and score every run of a sweep file (finished runs are skipped, interrupted ones resume)",
        description="Train and score every run of a sweep file not yet finished in --out. A killed sweep resumes "
        "where it stopped; a run that fails is recorded in DIR/failed/ and the others go on.",
    )
    run.add_argument("file", metavar="FILE", help=f"a sweep file (TOML), or a shipped one: {', '.join(SHIPPED)}")
    run.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: groundtruth-sweeps/NAME)")
    run.add_argument("--executor", choices=EXECUTORS, default="local", help="where runs go (default: %(default)s)")
    run.add_argument(
        "--workers", type=_number(int, 1), help="local: processes, one SAE group each (default: one per core)"
    )
    run.add_argument("--address", metavar="ADDR", help="ray: a running cluster's address (default: start one)")
    run.add_argument(
        "--group-size",
        type=_number(int, 1),
        default=4,
        help="most SAEs trained together on one data stream (default: %(default)s)",
    )
    _device_option(run, None, "the file's train.device, else auto")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    for name, what in (
        ("results", "print the table and write DIR/results.csv"),
        ("plot", "draw DIR/figures/"),
        ("proxies", "score SAEBench's proxies against ground truth (DIR/proxies*.csv, DIR/figures/proxies.png)"),
    ):
        action = actions.add_parser(name, help=what, description=f"From a sweep's saved runs: {what}.")
        action.add_argument("out", type=Path, metavar="DIR", help="the sweep's output folder")


def _sweep(args: argparse.Namespace) -> int:
    from analysis.experiments.sweep import SweepError

    try:
        actions = {"run": _sweep_run, "results": _sweep_results, "plot": _sweep_plot, "proxies": _sweep_proxies}
        return actions[args.action](args)
    except SweepError as err:
        raise _UsageError(str(err)) from None


def _sweep_run(args: argparse.Namespace) -> int:
    from analysis.experiments.sweep import load_sweep, run_sweep
    from analysis.sweeps import shipped_path

    sweep = load_sweep(shipped_path(args.file))
    out = args.out or Path("groundtruth-sweeps") / sweep.name
    started = time.perf_counter()
    print(f"groundtruth sweep: {len(sweep.runs)} runs of {sweep.name} -> {out}/")
    rerun = "skips the finished runs, resumes the unfinished ones from their checkpoints and runs the rest"
    with _writing([out], rerun):
        report = run_sweep(
            sweep,
            out,
            executor=args.executor,
            workers=args.workers,
            address=args.address,
            device=args.device,
            group_size=args.group_size,
            progress=not args.no_progress,
        )
    skipped = report.count("skipped") + report.total - len(report.outcomes)
    print(f"{report.count('finished')} finished, {skipped} finished before, {report.count('failed')} failed")
    for outcome in report.failed:
        print(f"  failed {outcome.id}: {outcome.error} (details: {out / 'failed' / outcome.id}.json)")
    print(f"runs:     {out / 'runs'}/ (each: run.json and the SAE in SAELens layout)")
    print(f"next:     groundtruth sweep results {out}   |   groundtruth sweep plot {out}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 1 if report.failed else 0


def _sweep_results(args: argparse.Namespace) -> int:
    from analysis.experiments.sweep.results import write_results

    text, path = _sweep_folder(write_results, args.out)
    print(text)
    print(f"table: {path}")
    return 0


def _sweep_plot(args: argparse.Namespace) -> int:
    from analysis.figures.sweep import plot_sweep

    paths = _sweep_folder(plot_sweep, args.out)
    print(f"figures: {', '.join(sorted(p.name for p in paths))} in {args.out / 'figures'}/")
    return 0


def _sweep_proxies(args: argparse.Namespace) -> int:
    from analysis.experiments.proxies import write_proxies
    from analysis.figures.proxies import draw_proxies

    text, paths = _sweep_folder(write_proxies, args.out)
    print(text)
    paths += draw_proxies(args.out)
    print(f"written: {', '.join(str(p) for p in paths)}")
    return 0


def _sweep_folder(fn: Callable[[Path], _T], out: Path) -> _T:
    """``fn(out)`` on a sweep's folder; a folder that is not one is an argument error."""
    try:
        return fn(out)
    except ValueError as err:
        raise _UsageError(str(err)) from None


def _pretrained_options(parser: argparse.ArgumentParser) -> None:
    from analysis.experiments.pretrained import RECIPES

    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=argparse.ArgumentParser)
    build = actions.add_parser(
        "build",
        help="retrain a shipped model from its recipe and rewrite its package entry",
        description="Train the model NAME from its recipe in RUN_DIR (a model trained there before is reused, an "
        "unfinished training resumes), measure it, and rewrite its entry in toymodels/shipped/: the model and "
        "card.json. Prints the weights' SHA-256 to declare in toymodels/shipped/__init__.py.",
    )
    build.add_argument("name", choices=list(RECIPES), metavar="NAME", help=f"one of {', '.join(RECIPES)}")
    build.add_argument(
        "--out", type=Path, metavar="RUN_DIR", help="run folder to train in (default: groundtruth-pretrained/NAME)"
    )
    _device_option(build, "cpu")
    build.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _pretrained(args: argparse.Namespace) -> int:
    return _pretrained_build(args) if args.action == "build" else _pretrained_list()


def _pretrained_list() -> int:
    from analysis.experiments.pretrained import recipe
    from toymodels.shipped import HashMismatch, check_hash, pretrained_card, pretrained_names

    mismatched = 0
    for name in pretrained_names():
        card = pretrained_card(name)
        try:
            check_hash(name)
            state = ""
        except HashMismatch:
            mismatched += 1
            state = "; its weights differ from the declared SHA-256"
        minutes = card["train_minutes"]
        trained = "" if minutes is None else f", trained in {minutes:.1f} min"
        print(f"{name:8s} {recipe(name).describe(card['headline'])}")
        print(f"{'':8s} {card['recipe']['command']}; {card['parameters']:,} parameters{trained}{state}")
    print("load one with toymodels.pretrained(NAME); its card with toymodels.pretrained_card(NAME)")
    return 1 if mismatched else 0


def _pretrained_build(args: argparse.Namespace) -> int:
    from analysis.experiments.pretrained import build_pretrained, recipe
    from toymodels.shipped import SHA256, entry_folder

    out = args.out or Path("groundtruth-pretrained") / args.name
    device = _device(args.device)
    started = time.perf_counter()
    print(f"groundtruth pretrained build {args.name}: {recipe(args.name).command()} -> {out}/ (on {device})")
    with _writing([out], f"reuses the trained model, {_RESUMES_TRAINING}, and writes the entry again"):
        card = build_pretrained(args.name, out, progress=not args.no_progress, device=device)
    print(recipe(args.name).describe(card["headline"]))
    print(f"entry:    {entry_folder(args.name)}/ (the model and card.json)")
    sha = card["weights_sha256"]
    if SHA256.get(args.name) == sha:
        print(f"SHA-256:  {sha}, as declared")
    else:
        print(f"SHA-256:  {sha}; declare it in toymodels/shipped/__init__.py: {args.name!r}: {sha!r}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; a command's options are declared when it is parsed or its help shown."""
    parser = argparse.ArgumentParser(
        prog="groundtruth",
        description="Synthetic ground truth for interpretability: data with known features, small models, "
        "and scores for how well SAEs recover them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Command)
    sub.add_parser(
        "demo",
        declare=_demo_options,
        help="one section per pillar: SAEs at matched L0 on known features, Mess3 beliefs, Othello boards",
        description="Train every SAE variant on `synthsaebench-small` and on the hidden layer of a toy model "
        "of superposition, score them against the true features, and write results, SAEs and figures.",
    ).set_defaults(run=_demo)
    sub.add_parser(
        "check-sae",
        declare=_check_sae_options,
        help="run the SAE conformance properties against your SAE factory",
        description="Check an SAE against the conformance properties (shapes, finiteness, declared sparsity, "
        "decoder norms, permutation equivariance, determinism, save/load, training, recovery of easy ground "
        "truth, sparsity knobs). Prints one row per property with the counterexample of each failure; exits "
        "with status 1 when any property fails.",
    ).set_defaults(run=_check_sae)
    sub.add_parser(
        "beliefs",
        declare=_beliefs_options,
        help="train a transformer on a hidden-Markov process and regress its residual stream to exact beliefs",
        description="Train a small transformer on a process from the zoo (or load the one trained before with the "
        "same options), regress the exact belief after every token from each layer, all layers concatenated and "
        "optionally an SAE's codes, against shuffled-target and random-init baselines, and write results, "
        "figures and the model (Shai et al. 2024).",
    ).set_defaults(run=_beliefs)
    sub.add_parser(
        "games",
        declare=_games_options,
        help="generate Othello/chess datasets, or train a game model and score SAEs on its board",
        description="With --generate N: write N random legal games in resumable shards. Otherwise: train a "
        "transformer on random games (or load the one trained before with the same options), probe every layer "
        "for the board (Othello: mine/theirs/empty; chess, on UCI move tokens: the piece on each square), train "
        "SAEs on a hook (default: the best probe layer's resid_post) of the trained and of a random-init model, "
        "and score them, the MLP neurons and the probe by coverage and board reconstruction (Karvonen et al. 2024).",
    ).set_defaults(run=_games)
    sub.add_parser(
        "sweep",
        declare=_sweep_options,
        help="run a sweep file of SAEs over sources, widths, L0s and seeds; print its table; draw its figures",
        description="Recovery experiments at scale. `sweep run FILE` trains every run of a sweep file on local "
        "processes or a Ray cluster, `sweep results DIR` prints and writes the table (mean ± std over seeds), "
        "`sweep plot DIR` draws the figures from the saved runs.",
    ).set_defaults(run=_sweep)
    sub.add_parser(
        "pretrained",
        declare=_pretrained_options,
        help="list the models shipped trained, with their measured numbers; `pretrained build NAME` retrains one",
        description="Without an action: list the models shipped in the package (toymodels.pretrained(NAME) loads "
        "one), with the numbers on their cards and the command that trains each. `pretrained build NAME` retrains "
        "one from its recipe and rewrites its entry.",
    ).set_defaults(run=_pretrained)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``) and return the exit status: 0, 1 (a
    conformance property failed), 2 (an argument error), 130 (interrupted). Bugs raise."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse printed the help (status 0) or the usage error (status 2)
        return exit_.code
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except _UsageError as err:
        print(f"groundtruth {args.command}: error: {err}", file=sys.stderr)
        return 2
    except _Interrupted as stop:
        print(
            f"\ngroundtruth {args.command}: interrupted\n{stop}:\n  {shlex.join(['groundtruth', *argv])}",
            file=sys.stderr,
        )
        return 130
    except KeyboardInterrupt:
        print(f"\ngroundtruth {args.command}: interrupted; nothing was saved", file=sys.stderr)
        return 130
