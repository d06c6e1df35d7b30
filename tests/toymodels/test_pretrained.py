"""The shipped models: each loads, its weights hash to the declared SHA-256, its card agrees with the files,
and a file changed on disk or an unknown name is refused with a message naming what is wrong."""

import hashlib
import json
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import toymodels
import toymodels.shipped as MODULE
from toymodels.shipped import (
    CARD_FILE,
    FOLDER,
    SHA256,
    HashMismatch,
    pretrained,
    pretrained_card,
    pretrained_names,
)
from toymodels.transformer import CONFIG_FILE, WEIGHTS_FILE, HookedTransformer, TransformerConfig, load_transformer

NAMES = ("mess3", "rrxor", "othello6")
SHAPES = {"mess3": (4, 64, 1, 256), "rrxor": (4, 64, 1, 256), "othello6": (4, 128, 4, 512)}  # the recipes' sizes


def test_the_package_exports_the_calls():
    assert toymodels.pretrained is pretrained and toymodels.pretrained_card is pretrained_card
    assert pretrained_names() == NAMES == tuple(SHA256)


@pytest.mark.parametrize("name", NAMES)
def test_each_entry_holds_the_model_and_its_card(name):
    assert sorted(p.name for p in (FOLDER / name).iterdir()) == sorted([CARD_FILE, CONFIG_FILE, WEIGHTS_FILE])


def test_the_shipped_weights_are_small():
    """The issue's condition: at most a few MB in all."""
    assert sum((FOLDER / name / WEIGHTS_FILE).stat().st_size for name in NAMES) < 6_000_000


@pytest.mark.parametrize("name", NAMES)
def test_weights_hash_to_the_declaration_and_the_card(name):
    digest = hashlib.sha256()
    with open(FOLDER / name / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    assert digest.hexdigest() == SHA256[name] == pretrained_card(name)["weights_sha256"]


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_loads_the_shipped_weights(name):
    model = pretrained(name, device="cpu")
    assert isinstance(model, HookedTransformer) and model.device == torch.device("cpu")
    saved = json.loads((FOLDER / name / CONFIG_FILE).read_text())
    assert model.cfg == TransformerConfig.from_dict(saved)
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.n_heads, model.cfg.d_mlp) == SHAPES[name]
    weights = load_file(FOLDER / name / WEIGHTS_FILE)
    state = model.state_dict()
    assert set(state) == set(weights) and all(torch.equal(state[k], weights[k]) for k in weights)
    assert pretrained_card(name)["parameters"] == sum(v.numel() for v in weights.values())


def _tampered(tmp_path, name: str, offset: int, bit: int):
    """A copy of the shipped entries in ``tmp_path`` with one bit of ``name``'s weights flipped ``offset``
    bytes from the end (the tensor data: the file still loads)."""
    shutil.copytree(FOLDER, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = tmp_path / name / WEIGHTS_FILE
    data = bytearray(path.read_bytes())
    data[-offset] ^= 1 << bit
    path.write_bytes(bytes(data))
    return path


@settings(max_examples=5)
@given(name=st.sampled_from(NAMES), offset=st.integers(1, 100_000), bit=st.integers(0, 7))
def test_a_changed_weights_file_is_refused_naming_model_file_and_hashes(tmp_path_factory, name, offset, bit):
    folder = tmp_path_factory.mktemp("entries")
    path = _tampered(folder, name, offset, bit)
    load_transformer(path.parent)  # without the check the changed weights would load
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MODULE, "FOLDER", folder)
        with pytest.raises(HashMismatch) as err:
            pretrained(name)
        other = next(n for n in NAMES if n != name)
        assert isinstance(pretrained(other), HookedTransformer)  # the untouched entry still loads
    message = str(err.value)
    assert repr(name) in message and str(path) in message and found in message and SHA256[name] in message
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("call", [pretrained, pretrained_card])
def test_an_unknown_name_is_a_value_error_listing_the_names(call):
    with pytest.raises(ValueError, match=r"name must be one of \['mess3', 'rrxor', 'othello6'\], got 'mess4'"):
        call("mess4")
