"""The SAE under test: what it promises (:class:`Declared`) and uniform access to what it supports."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch

from toymodels.sae import SparseAutoencoder, load_sae, save_sae
from toymodels.sae.registry import DATA_KINDS, SPARSITY_KINDS
from toymodels.sae.training import Trainer
from toymodels.training import TrainConfig

Sparsity = Literal["topk", "batchtopk", "threshold", "penalty", "pursuit"]
DataKind = Literal["flat", "hierarchical"]


@dataclass(frozen=True)
class Declared:
    """What an SAE promises. Properties check the promises; an undeclared promise is not checked.

    - ``nonnegative``: codes are never negative (ReLU-family encoders).
    - ``sparsity``: ``"topk"`` (at most ``k`` non-zeros per sample, exactly ``k`` when enough
      pre-activations are positive), ``"batchtopk"`` (``k`` per sample on average over a training
      batch, an inference ``threshold``), ``"threshold"`` (JumpReLU: a code is either 0 or above its
      latent's ``threshold``), ``"penalty"`` (a loss term; nothing structural to check), ``"pursuit"``
      (matching pursuit: at most ``k`` non-zeros, one per greedy step over unit decoder rows, so the
      reconstruction error never exceeds the empty code's; fewer than ``k`` where the pursuit stops early,
      so "usually exactly k" is not promised). The same vocabulary as the SAE classes' ``sparsity`` declaration.
    - ``decoder_norm``: ``"unit"`` (every decoder row has norm 1, before and after training steps) or
      ``"free"``.
    - ``knob``: the factory keyword that sets sparsity, and whether raising it raises L0
      (``k``) or lowers it (a penalty coefficient).
    - ``revives_dead_within``: training steps within which a latent that never fires is resampled.
    - ``built_for``: the data the SAE is built to recover features from, and so the data its recovery
      property trains on: ``"flat"`` (independent features) or ``"hierarchical"`` (parents whose
      children fire only with them; held to recovering both with less absorption than BatchTopK).
      The same vocabulary as the SAE classes' ``built_for`` declaration.
    """

    nonnegative: bool = False
    sparsity: Sparsity | None = None
    k: int | None = None
    decoder_norm: Literal["unit", "free"] | None = None
    knob: str | None = None
    knob_raises_l0: bool = True
    revives_dead_within: int | None = None
    built_for: DataKind = "flat"

    def __post_init__(self) -> None:
        if self.sparsity is not None and self.sparsity not in SPARSITY_KINDS:
            raise ValueError(f"sparsity must be one of {SPARSITY_KINDS} or None, got {self.sparsity!r}")
        if self.sparsity in ("topk", "batchtopk", "pursuit") and not (isinstance(self.k, int) and self.k >= 1):
            raise ValueError(f"sparsity={self.sparsity!r} needs a positive integer k, got k={self.k!r}")
        if self.decoder_norm not in (None, "unit", "free"):
            raise ValueError(f"decoder_norm must be 'unit', 'free' or None, got {self.decoder_norm!r}")
        if self.built_for not in DATA_KINDS:
            raise ValueError(f"built_for must be one of {DATA_KINDS}, got {self.built_for!r}")


def declared(sae: Any) -> Declared:
    """The promises ``sae`` makes: its ``groundtruth_declares`` attribute, else what its type implies."""
    own = getattr(sae, "groundtruth_declares", None)
    if isinstance(own, Declared):
        return own
    if isinstance(own, dict):
        unknown = set(own) - {f.name for f in fields(Declared)}
        if unknown:
            raise ValueError(f"groundtruth_declares has unknown fields {sorted(unknown)}")
        return Declared(**own)
    if own is not None:
        raise TypeError(f"groundtruth_declares must be a Declared or a dict, got {type(own).__name__}")
    if isinstance(sae, SparseAutoencoder):  # what its class declares (toymodels.sae.registry)
        cfg = sae.cfg
        resamples = sae.resamples_dead and cfg.decoder_norm == "unit" and cfg.resample_every > 0
        return Declared(
            nonnegative=True,
            sparsity=sae.sparsity,
            k=cfg.k if sae.sparsity_knob == "k" else None,
            decoder_norm=cfg.decoder_norm,
            knob=sae.sparsity_knob,
            knob_raises_l0=sae.knob_raises_l0,
            revives_dead_within=cfg.dead_after + cfg.resample_every if resamples else None,
            built_for=sae.built_for,
        )
    if type(sae).__module__.startswith("sae_lens"):
        arch = sae.cfg.architecture()
        if arch == "topk":
            return Declared(nonnegative=True, sparsity="topk", k=int(sae.cfg.k))
        if arch == "jumprelu":
            return Declared(nonnegative=True, sparsity="threshold")
        return Declared(nonnegative=arch in ("standard", "gated"))
    return Declared()


def load_factory(spec: str) -> Callable[..., Any]:
    """``"package.module:callable"`` -> the callable."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ValueError(f"factory must look like 'package.module:callable', got {spec!r}")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"factory {spec!r}: cannot import module {module_name!r} ({err})") from err
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ValueError(f"factory {spec!r}: {module_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ValueError(f"factory {spec!r} is not callable")
    return factory


class Subject:
    """One SAE from the factory, with uniform access to what it supports."""

    def __init__(self, factory: Callable[..., Any], d_in: int, d_sae: int, seed: int = 0, **knobs):
        self.factory, self.d_in, self.d_sae, self.seed = factory, d_in, d_sae, seed
        self.sae = factory(d_in, d_sae, seed=seed, **knobs)
        for name in ("encode", "decode"):
            if not callable(getattr(self.sae, name, None)):
                raise TypeError(f"the factory's SAE ({type(self.sae).__name__}) has no {name}() method")
        if not isinstance(getattr(self.sae, "W_dec", None), torch.Tensor):
            raise TypeError(f"the factory's SAE ({type(self.sae).__name__}) has no W_dec tensor")
        self.declared = declared(self.sae)
        self._trainer: Trainer | None = None
        self._steps = 0

    # inference
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._eval()
        with torch.no_grad():
            return self.sae.encode(x)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        self._eval()
        with torch.no_grad():
            return self.sae.decode(codes)

    @property
    def W_dec(self) -> torch.Tensor:
        return self.sae.W_dec.detach()

    def _eval(self) -> None:
        if isinstance(self.sae, torch.nn.Module):
            self.sae.eval()

    # training
    @property
    def trainable(self) -> bool:
        return isinstance(self.sae, SparseAutoencoder) or callable(getattr(self.sae, "training_step", None))

    def train_step(self, x: torch.Tensor, lr: float, total_steps: int = 1000) -> Any:
        """One optimiser step on ``x``; returns what the step returned (built-ins: their loss terms)."""
        if isinstance(self.sae, SparseAutoencoder):
            if self._trainer is None:
                self._trainer = Trainer(self.sae, TrainConfig(steps=total_steps, lr=lr, decay_fraction=0.0))
            self.sae.train()
            out = self._trainer.step(x, min(self._steps, total_steps - 1))
        else:
            if isinstance(self.sae, torch.nn.Module):
                self.sae.train()
            out = self.sae.training_step(x)
        self._steps += 1
        return out

    def train(self, batches: Iterator[torch.Tensor], steps: int, lr: float) -> None:
        for _ in range(steps):
            self.train_step(next(batches), lr=lr, total_steps=steps)

    # persistence
    @property
    def savable(self) -> bool:
        s = self.sae
        return (
            isinstance(s, SparseAutoencoder)
            or (callable(getattr(s, "save_model", None)) and callable(getattr(type(s), "load_from_disk", None)))
            or (callable(getattr(s, "save", None)) and callable(getattr(type(s), "load", None)))
        )

    def round_trip(self, folder: Path) -> Any:
        s = self.sae
        if isinstance(s, SparseAutoencoder):
            save_sae(s, folder)
            return load_sae(folder)
        if callable(getattr(s, "save_model", None)):
            s.save_model(folder)
            return type(s).load_from_disk(folder)
        s.save(folder)
        return type(s).load(folder)

    def accepts(self, keyword: str) -> bool:
        try:
            params = inspect.signature(self.factory).parameters.values()
        except (TypeError, ValueError):
            return False
        return any(p.name == keyword or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
