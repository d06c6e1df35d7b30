"""Splicing an SAE into a model: the activation at a hook replaced by the SAE's reconstruction.

An SAE is judged inside the model by what the model computes from its reconstruction: SAEBench's core
evaluation (the cross-entropy loss recovered) and the end-to-end SAEs of Braun et al. (2024, "Identifying
Functionally Important Features with End-to-End Sparse Dictionary Learning", arXiv:2405.12241), which train
on the KL divergence between the clean and the spliced model's outputs, both start here. Any SAE with
``encode`` and ``decode`` splices in: ours, a SAELens ``SAE``, a user's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from toymodels.transformer import HookedTransformer, HookPoint


def reconstruction_hook(sae) -> Callable[[torch.Tensor, HookPoint], torch.Tensor]:
    """A function for :meth:`HookedTransformer.run_with_hooks` that replaces the activation by
    ``sae.decode(sae.encode(activation))``, in the activation's dtype."""
    for method in ("encode", "decode"):
        if not callable(getattr(sae, method, None)):
            raise TypeError(f"sae must have encode and decode methods, got {type(sae).__name__} without {method}")

    def splice(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        return sae.decode(sae.encode(activation)).to(activation.dtype)

    return splice


def spliced_logits(model: HookedTransformer, tokens: torch.Tensor, sae, hook: str) -> torch.Tensor:
    """The model's logits with the activation at ``hook`` replaced by ``sae``'s reconstruction of it."""
    return model.run_with_hooks(tokens, fwd_hooks=[(hook, reconstruction_hook(sae))])


def output_kl(clean_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(clean ‖ spliced) of the next-token distributions, in nats, summed over the vocabulary and
    averaged over every position: Braun et al.'s e2e loss and SAEBench's KL. Differentiable in ``logits``."""
    if clean_logits.shape != logits.shape:
        raise ValueError(
            f"logits must have the clean logits' shape {tuple(clean_logits.shape)}, got {tuple(logits.shape)}"
        )
    clean = F.log_softmax(clean_logits.flatten(0, -2).float(), dim=-1)
    spliced = F.log_softmax(logits.flatten(0, -2).float(), dim=-1)
    return F.kl_div(spliced, clean, log_target=True, reduction="batchmean")


__all__ = ["output_kl", "reconstruction_hook", "spliced_logits"]
