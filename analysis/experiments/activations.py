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


def _batched(fn, sae, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``fn`` over rows of ``x [..., k]`` in batches moved to the SAE's device and dtype (where it has them),
    without gradients; the result as float32 on the CPU."""
    device, dtype = getattr(sae, "device", None), getattr(sae, "dtype", None)
    device = device if isinstance(device, torch.device | str) else None
    dtype = dtype if isinstance(dtype, torch.dtype) else None
    flat = x.reshape(-1, x.shape[-1])
    with torch.no_grad():
        out = [
            fn(flat[i : i + batch_size].to(device=device, dtype=dtype)).float().cpu()
            for i in range(0, len(flat), batch_size)
        ]
    return torch.cat(out).reshape(*x.shape[:-1], -1)


def sae_codes(sae, acts: torch.Tensor, batch_size: int = 65_536) -> torch.Tensor:
    """``sae.encode`` over activations ``[..., d]`` in batches, without gradients: any object with
    ``encode`` (ours or SAELens's), so its codes can be regressed on beliefs like any hook. Batches go to
    the SAE's device (an SAE left on the GPU after training), the codes come back to the CPU."""
    return _batched(sae.encode, sae, acts, batch_size)


def sae_reconstructions(sae, codes: torch.Tensor, batch_size: int = 65_536) -> torch.Tensor:
    """``sae.decode`` over codes ``[..., m]`` (from :func:`sae_codes`) in batches, as :func:`sae_codes` runs
    ``encode``: the reconstructions to score reconstruction error on."""
    return _batched(sae.decode, sae, codes, batch_size)


__all__ = ["activations", "sae_codes", "sae_reconstructions"]
