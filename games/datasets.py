"""Game datasets on disk: random games written in shards, each shard seeded on its own so that an
interrupted run resumes where it stopped and gives the same files as an uninterrupted one.

A folder holds ``meta.json`` (game, seed, shard size, the game's options) and ``shard-00000.npz`` …
with every field of the game's record (its :attr:`~games.protocol.Game.Games`); labels and tokens are
derived from them when read. Each shard is written to a temporary file and renamed, so a
shard on disk is always complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from games.protocol import get_game
from groundtruth.atomic import atomic_file, write_text_atomic
from groundtruth.checks import FolderConflict, check_int


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
    """Write ``n_games`` random games of the registered game ``game`` into ``out_dir``; shards already
    there are kept, so a rerun resumes. ``options`` make the game (:func:`games.get_game`; chess:
    ``max_plies``, ``capture_weight``). A folder made with other settings is refused
    (:class:`~groundtruth.checks.FolderConflict`)."""
    source = get_game(game, **options)
    check_int("n_games", n_games)
    check_int("shard_size", shard_size)
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
        batch = source.random_games(size, np.random.default_rng([seed, i]))  # shard i's own stream
        with atomic_file(path) as f:
            np.savez(f, **{fl.name: getattr(batch, fl.name) for fl in fields(batch)})
    return paths


def read_shards(out_dir: str | Path) -> Iterator:
    """The game records of a folder written by :func:`write_shards`, shard by shard."""
    out = Path(out_dir)
    meta = json.loads((out / "meta.json").read_text())
    cls = get_game(meta["game"], **meta["options"]).Games
    for path in sorted(out.glob("shard-*.npz")):
        with np.load(path) as data:
            yield cls(**{f.name: data[f.name] for f in fields(cls)})
