"""Save and load SAEs in SAELens's on-disk layout.

A folder holds ``cfg.json`` (SAELens fields + ``"architecture"`` + ``"metadata"``) and
``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc``, ``b_dec``, and
``threshold`` where the architecture has one). BatchTopK and Matryoshka are written as JumpReLU, their
inference form. Our full config rides along in ``metadata["groundtruth"]`` so that our own folders load
back into the exact training class; folders written by SAELens load by their architecture name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from toymodels.sae.base import SAEConfig, SparseAutoencoder
from toymodels.sae.registry import make_sae

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
_FROM_SAELENS = {"standard": "standard", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}


def sae_cfg_dict(sae: SparseAutoencoder) -> dict:
    return {
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        **sae.saelens_fields(),
        "architecture": sae.saved_as,
        "metadata": {"groundtruth": sae.cfg.to_dict()},
    }


def save_sae(sae: SparseAutoencoder, path: str | Path) -> Path:
    """Write ``sae`` to the folder ``path`` atomically: a crash leaves the old folder or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sae.export_state().items()}
        save_file(tensors, tmp / WEIGHTS_FILE)
        (tmp / CFG_FILE).write_text(json.dumps(sae_cfg_dict(sae), indent=2))
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def replace_dir(src: Path, dst: Path) -> None:
    """Move folder ``src`` to ``dst``, replacing ``dst``; one rename makes the new folder visible."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_dir(path: Path) -> None:
    """Finish a :func:`replace_dir` that was interrupted between its two renames."""
    old = path.with_name(f".{path.name}.old")
    if not path.exists() and old.exists():
        os.replace(old, path)


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load a folder written by :func:`save_sae` or by SAELens's ``SAE.save_model``."""
    path = Path(path)
    recover_dir(path)
    if not (path / CFG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise ValueError(f"path {str(path)!r} is not an SAE folder (needs {CFG_FILE} and {WEIGHTS_FILE})")
    raw = json.loads((path / CFG_FILE).read_text())
    weights = load_file(path / WEIGHTS_FILE)
    ours = (raw.get("metadata") or {}).get("groundtruth")
    if ours is not None:
        cfg = SAEConfig.from_dict(ours)
    else:
        arch = raw.get("architecture", "standard")
        if arch not in _FROM_SAELENS:
            raise ValueError(f"cannot load SAELens architecture {arch!r}; supported: {sorted(_FROM_SAELENS)}")
        cfg = SAEConfig(architecture=_FROM_SAELENS[arch], d_in=raw["d_in"], d_sae=raw["d_sae"], k=raw.get("k", 32))
        if not raw.get("apply_b_dec_to_input", True):
            raise ValueError("SAEs with apply_b_dec_to_input=false are not supported")
        if raw.get("normalize_activations", "none") != "none":
            raise ValueError(f"normalize_activations={raw['normalize_activations']!r} is not supported")
        if raw.get("rescale_acts_by_decoder_norm", False):
            raise ValueError("TopK SAEs with rescale_acts_by_decoder_norm=true are not supported")
    sae = make_sae(cfg)
    sae.import_state(weights)
    return sae.to(device)
