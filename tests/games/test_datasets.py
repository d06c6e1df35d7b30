"""Sharded game datasets: same games as the generator, resumable, never half-written."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from games import get_game
from games.datasets import read_shards, write_shards


def same(a, b) -> bool:
    return all(np.array_equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))


@pytest.mark.parametrize(("game", "options"), [("othello", {}), ("chess", {"max_plies": 20, "capture_weight": 2.0})])
def test_shards_hold_the_generators_games_and_resume(tmp_path, game: str, options: dict) -> None:
    paths = write_shards(game, 50, tmp_path, shard_size=20, seed=3, progress=False, **options)
    assert [p.name for p in paths] == ["shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]
    shards = list(read_shards(tmp_path))
    assert [len(s) for s in shards] == [20, 20, 10]
    expected = get_game(game, **options).random_games(20, np.random.default_rng([3, 1]))  # shard 1's own stream
    assert same(shards[1], expected)
    before = paths[1].read_bytes()
    paths[1].unlink()  # an interrupted run: the rerun writes only what is missing, identically
    mtime = paths[0].stat().st_mtime_ns
    write_shards(game, 50, tmp_path, shard_size=20, seed=3, progress=False, **options)
    assert paths[1].read_bytes() == before and paths[0].stat().st_mtime_ns == mtime


def test_a_failed_write_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        write_shards("othello", 10, tmp_path, shard_size=5, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]


def test_other_settings_and_bad_arguments_are_refused(tmp_path) -> None:
    write_shards("othello", 4, tmp_path, shard_size=4, seed=0, progress=False)
    with pytest.raises(ValueError, match="holds games made with"):
        write_shards("othello", 4, tmp_path, shard_size=4, seed=1, progress=False)
    with pytest.raises(ValueError, match="game must be"):
        write_shards("go", 4, tmp_path / "go", progress=False)
    with pytest.raises(ValueError, match="n_games"):
        write_shards("chess", 0, tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="no options"):
        write_shards("othello", 4, tmp_path / "o", progress=False, max_plies=3)
