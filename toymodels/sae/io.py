"""Save and load SAEs in SAELens's on-disk layout.

A folder holds ``cfg.json`` (SAELens fields + ``"architecture"`` + ``"metadata"``) and
``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc``, ``b_dec``, and
``threshold`` where the architecture has one). BatchTopK and Matryoshka are written as JumpReLU, their
inference form. Our full config rides along in ``metadata["groundtruth"]`` so that our own folders load
back into the exact training class; folders written by SAELens load by their architecture name, in
either form SAELens 6 writes: an inference SAE's (``standard``, ``topk``, ``jumprelu``, ``gated``,
``matching_pursuit``) or a training SAE's ``save_model`` (the same five, plus ``batchtopk`` and
``matryoshka_batchtopk`` with their running ``topk_threshold``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from groundtruth.atomic import atomic_dir, recover_dir
from toymodels.sae.base import SparseAutoencoder
from toymodels.sae.config import SAEConfig
from toymodels.sae.registry import SAE_CLASSES, make_sae, sae_class

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
_FROM_SAELENS = (  # our names too
    "standard",
    "topk",
    "batchtopk",
    "jumprelu",
    "gated",
    "matryoshka_batchtopk",
    "matching_pursuit",
)


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


def _pursuit_fields(raw: dict) -> tuple[dict, dict]:
    """A SAELens matching-pursuit cfg.json as ours: ``max_iterations`` is our ``k`` (None: ``d_in`` steps, as
    SAELens), ``residual_threshold`` ours (SAELens's default 1e-2 where absent)."""
    if raw.get("stop_on_duplicate_support", True) is not True:
        raise ValueError("stop_on_duplicate_support=false is not supported: our pursuit stops when no latent is added")
    steps = raw.get("max_iterations")
    steps = raw["d_in"] if steps is None else steps
    if isinstance(steps, int) and steps > raw["d_sae"]:
        # the step after d_sae new latents would grow one of them, a step ours (k <= d_sae) does not take
        raise ValueError(
            f"max_iterations={steps} (None: d_in) exceeds d_sae={raw['d_sae']}: ours takes k <= d_sae steps"
        )
    return {**raw, "k": steps}, {"residual_threshold": float(raw.get("residual_threshold", 1e-2))}


def save_sae(sae: SparseAutoencoder, path: str | Path) -> Path:
    """Write ``sae`` to the folder ``path`` atomically: a crash leaves the old folder or the new one."""
    with atomic_dir(path) as tmp:
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sae.export_state().items()}
        save_file(tensors, tmp / WEIGHTS_FILE)
        (tmp / CFG_FILE).write_text(json.dumps(sae_cfg_dict(sae), indent=2))
    return Path(path)


def saved_config(path: str | Path) -> SAEConfig | None:
    """The config an SAE in the folder ``path`` was trained under, or None for a folder SAELens wrote
    (:func:`load_sae` may return another parametrisation of the same function, see ``loaded_config``)."""
    ours = (json.loads((Path(path) / CFG_FILE).read_text()).get("metadata") or {}).get("groundtruth")
    return None if ours is None else SAEConfig.from_dict(ours)


def load_sae(path: str | Path, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """Load a folder written by :func:`save_sae` or by SAELens's ``save_model`` / ``save_inference_model``.

    A SAELens BatchTopK or Matryoshka training folder loads as our class of that name, computing its
    inference function (JumpReLU at the saved ``topk_threshold``), which is what SAELens's
    ``save_inference_model`` of the same SAE computes.
    """
    path = Path(path)
    recover_dir(path)
    if not (path / CFG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise ValueError(f"path {str(path)!r} is not an SAE folder (needs {CFG_FILE} and {WEIGHTS_FILE})")
    raw = json.loads((path / CFG_FILE).read_text())
    weights = load_file(path / WEIGHTS_FILE)
    ours = (raw.get("metadata") or {}).get("groundtruth")
    if ours is not None:
        cfg = SAEConfig.from_dict(ours)
        cfg = SAE_CLASSES[cfg.architecture].loaded_config(cfg)
    else:
        arch = raw.get("architecture", "standard")
        if arch not in _FROM_SAELENS:
            raise ValueError(f"cannot load SAELens architecture {arch!r}; supported: {sorted(_FROM_SAELENS)}")
        pursuit = {}
        if arch == "matching_pursuit":
            raw, pursuit = _pursuit_fields(raw)
        topk_like = sae_class(arch).sparsity_knob == "k"
        # SAELens's rescale_acts_by_decoder_norm is our free decoder policy (TopK-like only; raw rows kept)
        rescaled = topk_like and bool(raw.get("rescale_acts_by_decoder_norm", False))
        k = raw.get("k", 32)
        if isinstance(k, float) and k.is_integer():
            k = int(k)
        elif topk_like and not isinstance(k, int):
            raise ValueError(f"k={k!r} in cfg.json: our {arch} SAE keeps a whole number of latents per sample")
        cfg = SAEConfig(
            architecture=arch,
            d_in=raw["d_in"],
            d_sae=raw["d_sae"],
            k=k,
            decoder_norm="free" if rescaled else "unit" if topk_like else None,
            matryoshka_prefixes=tuple(raw.get("matryoshka_widths", ())),
            **pursuit,
        )
        if "topk_threshold" in weights:  # BatchTopK's running threshold, its inference threshold for every latent
            running = weights.pop("topk_threshold")
            if running.numel() != 1:
                raise ValueError(f"topk_threshold must be one number, got shape {tuple(running.shape)}")
            weights["threshold"] = torch.full((cfg.d_sae,), float(running))
        if not raw.get("apply_b_dec_to_input", True):
            raise ValueError("SAEs with apply_b_dec_to_input=false are not supported")
        if raw.get("normalize_activations", "none") != "none":
            raise ValueError(f"normalize_activations={raw['normalize_activations']!r} is not supported")
    sae = make_sae(cfg)
    sae.import_state(weights)
    return sae.to(device)
