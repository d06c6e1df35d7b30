"""The `groundtruth` command line."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from analysis.belief_experiment import belief_report
    from analysis.demo import run_demo
    from analysis.game_experiment import games_report
    from analysis.recovery import scoreboard

    out = Path(args.out)
    started = time.perf_counter()
    print(
        f"groundtruth demo: the SAE family on two sources with known features, Mess3 beliefs, Othello boards -> {out}/"
    )
    rows, beliefs, othello = run_demo(out, seed=args.seed, quick=args.quick, progress=not args.no_progress)
    print()
    print(scoreboard(rows))
    print()
    print(belief_report(beliefs))
    print()
    print(games_report(othello))
    print()
    print(f"results:  {out / 'results.json'}, {out / 'beliefs' / 'results.json'}, {out / 'othello' / 'results.json'}")
    print(f"figures:  {', '.join(sorted(p.name for p in out.glob('*.png')))} (and PDF) in {out}/")
    for sub in ("beliefs", "othello"):
        print(f"          {', '.join(sorted(p.name for p in (out / sub).glob('*.png')))} in {out / sub}/")
    print(f"SAEs:     {out / 'saes'}/ (SAELens layout: SAE.load_from_disk works on each folder)")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


def _check_sae(args: argparse.Namespace) -> int:
    from analysis.conformance import check_sae, load_factory, results_table

    factory = load_factory(args.factory)
    print(f"groundtruth check-sae {args.factory} --profile {args.profile}")
    results = check_sae(factory, args.profile, tuple(args.only) if args.only else None)
    print(results_table(results))
    return 1 if any(r.status == "failed" for r in results) else 0


def _beliefs(args: argparse.Namespace) -> int:
    from analysis.belief_experiment import BeliefConfig, belief_report, run_beliefs

    cfg = BeliefConfig(
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
    out = Path(args.out or f"groundtruth-beliefs/{cfg.process}-{cfg.model}{'-soft' if cfg.soft else ''}")
    started = time.perf_counter()
    print(f"groundtruth beliefs: {cfg.process} on the {cfg.model} transformer -> {out}/")
    results = run_beliefs(cfg, out, progress=not args.no_progress)
    print()
    print(belief_report(results))
    print()
    print(f"results:  {out / 'results.json'}")
    print(f"figures:  {', '.join(sorted(p.name for p in out.glob('*.png')))} (and PDF) in {out}/")
    print(f"model:    {out / 'model'}/ (load_transformer; a rerun with the same options reuses it)")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


def _games(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.generate is not None:
        from games.datasets import write_shards

        out = Path(args.out or f"groundtruth-games/{args.game}-data")
        options = {} if args.game == "othello" else {"max_plies": args.max_plies, "capture_weight": args.capture_weight}
        print(f"groundtruth games {args.game}: {args.generate:,} random games -> {out}/")
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
    from analysis.game_experiment import GameConfig, games_report, run_games

    cfg = GameConfig(
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
    out = Path(args.out or f"groundtruth-games/{cfg.game}-{cfg.model}")
    print(f"groundtruth games {cfg.game}: the {cfg.model} transformer, probes and SAEs -> {out}/")
    results = run_games(cfg, out, progress=not args.no_progress)
    print()
    print(games_report(results))
    print()
    print(f"results:  {out / 'results.json'}")
    print(f"figures:  {', '.join(sorted(p.name for p in out.glob('*.png')))} (and PDF) in {out}/")
    print(f"model:    {out / 'model'}/, SAEs: {out / 'saes'}/ (a rerun with the same model options reuses them)")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="groundtruth",
        description="Synthetic ground truth for interpretability: data with known features, small models, "
        "and scores for how well SAEs recover them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="train the SAE family on synthetic data and a toy model, print a scoreboard, write figures",
        description="Train every SAE variant on `synthsaebench-small` and on the hidden layer of a toy model "
        "of superposition, score them against the true features, and write results, SAEs and figures.",
    )
    demo.add_argument("--out", default="groundtruth-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seed for data and SAEs (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="a much smaller run, for smoke tests")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(run=_demo)
    check = sub.add_parser(
        "check-sae",
        help="run the SAE conformance properties against your SAE factory",
        description="Check an SAE against the conformance properties (shapes, finiteness, declared sparsity, "
        "decoder norms, permutation equivariance, determinism, save/load, training, recovery of easy ground "
        "truth, sparsity knobs). Prints one row per property with the counterexample of each failure; exits "
        "with status 1 when any property fails.",
    )
    check.add_argument(
        "factory", help="module:callable returning an SAE for (d_in, d_sae, *, seed), e.g. toymodels.sae.factories:topk"
    )
    check.add_argument(
        "--profile", choices=("fast", "thorough"), default="fast", help="how hard to look (default: %(default)s)"
    )
    check.add_argument("--only", nargs="+", metavar="PROPERTY", help="run only these properties")
    check.set_defaults(run=_check_sae)
    from analysis.belief_experiment import MODELS, BeliefConfig
    from groundtruth.processes import PROCESSES

    defaults = BeliefConfig()
    beliefs = sub.add_parser(
        "beliefs",
        help="train a transformer on a hidden-Markov process and regress its residual stream to exact beliefs",
        description="Train a small transformer on a process from the zoo (or load the one trained before with the "
        "same options), regress the exact belief after every token from each layer, all layers concatenated and "
        "optionally an SAE's codes, against shuffled-target and random-init baselines, and write results, "
        "figures and the model (Shai et al. 2024).",
    )
    beliefs.add_argument(
        "--process",
        choices=sorted(PROCESSES),
        default=defaults.process,
        help="process from the zoo; mess3 is the paper's (x 0.05, alpha 0.85) (default: %(default)s)",
    )
    beliefs.add_argument(
        "--model",
        choices=sorted(MODELS),
        default=defaults.model,
        help="size by name; paper = 4 layers, d_model 64, 1 head, d_mlp 256 (default: %(default)s)",
    )
    beliefs.add_argument("--n-ctx", type=int, default=defaults.n_ctx, help="context length (default: %(default)s)")
    beliefs.add_argument("--steps", type=int, default=defaults.steps, help="training steps (default: %(default)s)")
    beliefs.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="sequences per step (default: %(default)s)"
    )
    beliefs.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate (default: %(default)s)")
    beliefs.add_argument("--soft", action="store_true", help="train on exact next-token distributions")
    beliefs.add_argument("--sae-width", type=int, default=0, help="also score a TopK SAE of this width (0: none)")
    beliefs.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed for weights, data and split (default: %(default)s)"
    )
    beliefs.add_argument("--out", help="output folder (default: groundtruth-beliefs/PROCESS-MODEL)")
    beliefs.add_argument("--no-progress", action="store_true", help="hide progress bars")
    beliefs.set_defaults(run=_beliefs)
    from analysis.game_experiment import MODELS as GAME_MODELS
    from analysis.game_experiment import GameConfig

    game_defaults = GameConfig()
    games = sub.add_parser(
        "games",
        help="generate Othello/chess datasets, or train a game model and score SAEs on its board",
        description="With --generate N: write N random legal games in resumable shards. Otherwise: train a "
        "transformer on random games (or load the one trained before with the same options), probe every layer "
        "for the board (Othello: mine/theirs/empty; chess, on UCI move tokens: the piece on each square), train "
        "SAEs on a hook (default: the best probe layer's resid_post) of the trained and of a random-init model, and score them, the MLP neurons and the "
        "probe by coverage and board reconstruction (Karvonen et al. 2024).",
    )
    games.add_argument("game", choices=("othello", "chess"), help="which game")
    games.add_argument("--generate", type=int, metavar="N", help="write N random games and stop")
    games.add_argument("--shard-size", type=int, default=100_000, help="games per shard file (default: %(default)s)")
    games.add_argument(
        "--max-plies", type=int, default=100, help="chess: ply cap per game, the model's context (default: %(default)s)"
    )
    games.add_argument(
        "--capture-weight", type=float, default=1.0, help="chess: weight of captures against other moves (default: 1)"
    )
    games.add_argument(
        "--model",
        choices=sorted(GAME_MODELS),
        default=game_defaults.model,
        help="size by name; paper = 8 layers x 512 (a GPU recipe), small = 4 x 128 (default: %(default)s)",
    )
    games.add_argument("--steps", type=int, default=game_defaults.steps, help="training steps (default: %(default)s)")
    games.add_argument(
        "--batch-size", type=int, default=game_defaults.batch_size, help="games per step (default: %(default)s)"
    )
    games.add_argument("--lr", type=float, default=game_defaults.lr, help="Adam learning rate (default: %(default)s)")
    games.add_argument(
        "--hook",
        default="",
        help="hook the SAEs read, e.g. blocks.1.mlp.hook_post (default: the best probe layer's resid_post)",
    )
    for flag, what in (
        ("width", "latents per SAE"),
        ("steps", "SAE training steps"),
        ("games", "games of SAE training data"),
    ):
        games.add_argument(
            f"--sae-{flag}",
            type=int,
            default=getattr(game_defaults, f"sae_{flag}"),
            help=f"{what} (default: %(default)s)",
        )
    games.add_argument("--seed", type=int, default=0, help="seed for games, weights and splits (default: %(default)s)")
    games.add_argument("--out", help="output folder (default: groundtruth-games/GAME-MODEL or GAME-data)")
    games.add_argument("--no-progress", action="store_true", help="hide progress bars")
    games.set_defaults(run=_games)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "seed", 0) < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError) as err:
        print(f"groundtruth {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
