"""Game datasets on disk: random games written in shards, each shard seeded on its own so that an
interrupted run resumes where it stopped and gives the same files as an uninterrupted one.

A folder holds ``meta.json`` (game, seed, shard size, generator options) and ``shard-00000.npz`` …
with every field of the game batch (:class:`games.othello.Games` or :class:`games.chess.Games`); labels
and tokens are derived from them when read. Each shard is written to a temporary file and renamed, so a
shard on disk is always complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from games import chess, othello
from groundtruth.atomic import atomic_file, write_text_atomic
from groundtruth.checks import FolderConflict, check_int

GAMES = {"othello": othello, "chess": chess}


def _generate(game: str, n: int, rng: np.random.Generator, options: dict):
    if game == "othello":
        return othello.random_games(n, rng)
    return chess.random_games(n, rng, **options)


def write_shards(
    game: str,
    n_games: int,
    out_dir: str | Path,
    *,
    shard_size: int = 100_000,
    seed: int = 0,
    progress: bool = True,
    **options,
) -> list[Path]:
    """Write ``n_games`` random games of ``game`` ("othello" or "chess") into ``out_dir``; shards already
    there are kept, so a rerun resumes. ``options`` go to the generator (chess: ``max_plies``,
    ``capture_weight``). A folder made with other settings is refused (:class:`~groundtruth.checks.FolderConflict`)."""
    if game not in GAMES:
        raise ValueError(f"game must be one of {sorted(GAMES)}, got {game!r}")
    check_int("n_games", n_games)
    check_int("shard_size", shard_size)
    if game == "othello" and options:
        raise ValueError(f"Othello games take no options, got {sorted(options)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"game": game, "seed": seed, "shard_size": shard_size, "options": options}
    saved = out / "meta.json"
    if saved.exists():
        before = json.loads(saved.read_text())
        if {k: before.get(k) for k in meta} != meta:
            raise FolderConflict(f"{str(out)!r} holds games made with {before}; choose another folder")
    n_shards = -(-n_games // shard_size)
    write_text_atomic(saved, json.dumps({**meta, "n_games": n_games}, indent=1))
    paths = []
    for i in tqdm(range(n_shards), desc=f"{game} shards", disable=not progress):
        path = out / f"shard-{i:05d}.npz"
        paths.append(path)
        if path.exists():
            continue
        size = min(shard_size, n_games - i * shard_size)
        batch = _generate(game, size, np.random.default_rng([seed, i]), options)  # shard i's own stream
        with atomic_file(path) as f:
            np.savez(f, **{fl.name: getattr(batch, fl.name) for fl in fields(batch)})
    return paths


def read_shards(out_dir: str | Path) -> Iterator:
    """The game batches of a folder written by :func:`write_shards`, shard by shard."""
    out = Path(out_dir)
    meta = json.loads((out / "meta.json").read_text())
    cls = GAMES[meta["game"]].Games
    for path in sorted(out.glob("shard-*.npz")):
        with np.load(path) as data:
            yield cls(**{f.name: data[f.name] for f in fields(cls)})
