"""The step every experiment shares after training a model: run it once over tokens and keep the
activations at the hooks its SAEs and regressions read, and encode those with an SAE."""

from __future__ import annotations

import torch


def activations(
    model, tokens: torch.Tensor, names: list[str], batch_size: int = 16_384
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits ``[N, n_ctx, V]`` and ``{hook name: [N, n_ctx, d]}`` from one pass of
    ``model.run_with_cache`` over ``tokens``, in batches, without gradients (a name given twice is
    returned once)."""
    names = list(dict.fromkeys(names))
    logits, parts = [], {name: [] for name in names}
    with torch.no_grad():
        for start in range(0, len(tokens), batch_size):
            out, cache = model.run_with_cache(tokens[start : start + batch_size].to(model.device), names=names)
            logits.append(out.float().cpu())
            for name in names:
                parts[name].append(cache[name].float().cpu())
    return torch.cat(logits), {name: torch.cat(chunks) for name, chunks in parts.items()}


def sae_codes(sae, acts: torch.Tensor, batch_size: int = 65_536) -> torch.Tensor:
    """``sae.encode`` over activations ``[..., d]`` in batches, without gradients: any object with
    ``encode`` (ours or SAELens's), so its codes can be regressed on beliefs like any hook."""
    flat = acts.reshape(-1, acts.shape[-1])
    with torch.no_grad():
        codes = torch.cat([sae.encode(flat[i : i + batch_size]).float() for i in range(0, len(flat), batch_size)])
    return codes.reshape(*acts.shape[:-1], -1)


__all__ = ["activations", "sae_codes"]
