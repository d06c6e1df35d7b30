"""Experiment folders: one config per folder, so a rerun reuses what an earlier run with the same options
trained and never mixes results of different options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from groundtruth.atomic import write_text_atomic
from groundtruth.checks import FolderConflict


def open_run(out_dir: str | Path, config: dict, *, replace: bool = False) -> Path:
    """Create ``out_dir`` holding ``config.json``. A folder holding another config is refused (a
    :class:`~groundtruth.checks.FolderConflict` naming it), or with ``replace`` emptied first; one with the
    same config is kept."""
    out = Path(out_dir)
    saved = out / "config.json"
    wanted = json.loads(json.dumps(config))  # as it reads back: tuples become lists
    if saved.exists() and json.loads(saved.read_text()) != wanted:
        if not replace:
            raise FolderConflict(f"{str(out)!r} holds a run with a different config ({saved}); choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(saved, json.dumps(config, indent=1))
    return out
