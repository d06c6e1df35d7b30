"""Small models trained once and shipped in the package, so notebooks and tests start from a trained model
without a network or minutes of training.

Each lives in ``toymodels/shipped/<name>/``: the transformer as :func:`toymodels.transformer.save_transformer`
writes it, and ``card.json`` with its recipe (the command and seed that train it), versions, training time
and measured numbers. The weights' SHA-256 is declared here, in code, so a file changed on disk is refused
rather than silently loaded. ``groundtruth pretrained build NAME`` (:mod:`analysis.experiments.pretrained`)
retrains an entry and prints the hash to declare.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from toymodels.transformer import WEIGHTS_FILE, HookedTransformer, load_transformer

FOLDER = Path(__file__).parent  # the entries' parent folder
CARD_FILE = "card.json"

# name -> SHA-256 of <name>/model.safetensors, as written by `groundtruth pretrained build NAME`.
SHA256: dict[str, str] = {
    "mess3": "8fed0eb926d814cb4bb8b18d1afc915e71123f1cbe70c43227d7270826be0b3d",
    "rrxor": "b8a56aa9c354e385035b9f1607036b882ae8c72635c9da87a8334c239991b8fc",
    "othello6": "35f4bc5b80fc115959976f970c8f4424ad86303c09763450316f2cf77fc5667f",
}


class HashMismatch(ValueError):
    """A shipped weights file whose bytes are not the ones declared in :data:`SHA256`."""


def pretrained_names() -> tuple[str, ...]:
    """The names :func:`pretrained` accepts."""
    return tuple(SHA256)


def entry_folder(name: str) -> Path:
    """The folder of the entry ``name``, declared or not yet (read at call time, so tests can move :data:`FOLDER`)."""
    return FOLDER / name


def _entry(name: str) -> Path:
    if name not in SHA256:
        raise ValueError(f"name must be one of {list(SHA256)}, got {name!r}")
    return entry_folder(name)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_hash(name: str) -> Path:
    """The folder of the entry ``name`` once its weights match the declared SHA-256; a
    :class:`HashMismatch` naming the model, the file and both hashes otherwise."""
    folder = _entry(name)
    weights = folder / WEIGHTS_FILE
    found = file_sha256(weights)
    if found != SHA256[name]:
        raise HashMismatch(
            f"pretrained model {name!r}: {weights} has SHA-256 {found}, expected {SHA256[name]}; "
            f"rebuild it with `groundtruth pretrained build {name}` and declare the new hash"
        )
    return folder


def pretrained(name: str, device: str | torch.device = "cpu") -> HookedTransformer:
    """The shipped model ``name`` on ``device``, after checking its weights' hash."""
    return load_transformer(check_hash(name), device)


def pretrained_card(name: str) -> dict:
    """The card of the shipped model ``name``: recipe, hash, versions, training time, measured numbers."""
    return json.loads((_entry(name) / CARD_FILE).read_text())


__all__ = [
    "CARD_FILE",
    "FOLDER",
    "SHA256",
    "HashMismatch",
    "check_hash",
    "entry_folder",
    "file_sha256",
    "pretrained",
    "pretrained_card",
    "pretrained_names",
]
