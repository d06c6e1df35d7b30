"""A small decoder-only transformer with TransformerLens hook names, config fields and weight shapes.

``run_with_cache(tokens, names=...)`` returns the logits and the activations at the requested hooks:
``hook_embed``, ``hook_pos_embed``, ``blocks.{l}.hook_resid_pre|hook_resid_mid|hook_resid_post``,
``blocks.{l}.attn.hook_pattern``, ``blocks.{l}.mlp.hook_post`` and ``ln_final.hook_normalized`` (the
normalised residual before LayerNorm's weight and bias, as in TransformerLens); ``run_with_hooks(tokens,
fwd_hooks=[(name, fn)])`` lets ``fn(activation, hook)`` replace the activation, as TransformerLens's does
(how an SAE is spliced in). Pre-LayerNorm blocks,
learned absolute positions, causal attention (Vaswani et al. 2017; Radford et al. 2019).

The blocks' parameters carry TransformerLens's names and shapes (``blocks.0.attn.W_Q [n_heads, d_model,
d_head]``, ``blocks.0.mlp.W_in``, ``blocks.0.ln1.w``, ...); the embedding, positions and unembedding are
``W_E``, ``W_pos``, ``W_U``, ``b_U`` here and ``embed.W_E``, ``pos_embed.W_pos``, ``unembed.W_U``,
``unembed.b_U`` there. :func:`to_transformer_lens` builds the same network as a TransformerLens
``HookedTransformer`` (from :func:`transformer_lens_config` and :func:`transformer_lens_state_dict`), and
:func:`from_transformer_lens_state_dict` reads one back. Two hooks exist here only: attention-only blocks
still report ``hook_resid_mid`` (equal to ``hook_resid_post``), and a model without LayerNorm reports
``ln_final.hook_normalized`` (the residual itself). TransformerLens is not a dependency.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from groundtruth.atomic import atomic_dir, recover_dir
from groundtruth.checks import check_int
from groundtruth.config import Config
from toymodels.training import TrainConfig, TrainResult, fit, gradient_step

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}  # TransformerLens's "gelu" is the exact F.gelu too
LN_EPS = 1e-5  # LayerNorm's epsilon, TransformerLens's default ``eps``
# Our top-level parameter names -> TransformerLens's; the blocks' names are the same in both.
_TL_NAMES = {"W_E": "embed.W_E", "W_pos": "pos_embed.W_pos", "W_U": "unembed.W_U", "b_U": "unembed.b_U"}
# Buffers a TransformerLens HookedTransformer keeps in its state dict (attention masks), not weights.
_TL_BUFFERS = ("attn.mask", "attn.IGNORE")


@dataclass(frozen=True)
class TransformerConfig(Config):
    """Hyperparameters, named as in TransformerLens's ``HookedTransformerConfig``."""

    n_layers: int
    d_model: int
    n_ctx: int
    d_vocab: int
    n_heads: int = 1
    d_head: int | None = None  # defaults to d_model // n_heads
    d_mlp: int | None = None  # defaults to 4 * d_model; 0 for attention-only
    act_fn: str = "gelu"
    normalization_type: str | None = "LN"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_ctx", "d_vocab", "n_heads"):
            check_int(name, getattr(self, name))
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; set d_head")
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
        check_int("d_head", self.d_head)
        if self.d_mlp is None:
            object.__setattr__(self, "d_mlp", 4 * self.d_model)
        check_int("d_mlp", self.d_mlp, minimum=0)
        if self.act_fn not in _ACTIVATIONS:
            raise ValueError(f"act_fn must be one of {sorted(_ACTIVATIONS)}, got {self.act_fn!r}")
        if self.normalization_type not in ("LN", None):
            raise ValueError(f"normalization_type must be 'LN' or None, got {self.normalization_type!r}")
        check_int("seed", self.seed, minimum=0)

    @property
    def hook_names(self) -> list[str]:
        """Every hook a model of this config can return from ``run_with_cache``, in forward order."""
        names = ["hook_embed", "hook_pos_embed"]
        for layer in range(self.n_layers):
            names += [f"blocks.{layer}.{n}" for n in ("hook_resid_pre", "attn.hook_pattern", "hook_resid_mid")]
            if self.d_mlp:
                names.append(f"blocks.{layer}.mlp.hook_post")
            names.append(f"blocks.{layer}.hook_resid_post")
        return names + ["ln_final.hook_normalized"]

    @property
    def sae_hook_names(self) -> list[str]:
        """The hooks an SAE can read, or be spliced in at: one vector per token (not an attention pattern, nor
        the position embedding, the same for every sequence)."""
        return [h for h in self.hook_names if not h.endswith(("hook_pattern", "hook_pos_embed"))]


@dataclass(frozen=True)
class HookPoint:
    """What a hook function receives beside the activation, as in TransformerLens: the hook's ``name``."""

    name: str


class _LayerNorm(nn.Module):
    def __init__(self, d: int, enabled: bool):
        super().__init__()
        self.enabled = enabled
        if enabled:
            self.w = nn.Parameter(torch.ones(d))
            self.b = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.w, self.b, eps=LN_EPS) if self.enabled else x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Centred and scaled to unit variance, before the weight and bias (TransformerLens's hook_normalized)."""
        return F.layer_norm(x, x.shape[-1:], eps=LN_EPS) if self.enabled else x

    def scale(self, normalized: torch.Tensor) -> torch.Tensor:
        """The weight and bias applied to a normalised ``x``: ``scale(normalize(x)) == forward(x)``."""
        return normalized * self.w + self.b if self.enabled else normalized


class _Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        h, d, dh, m = cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_mlp
        ln = cfg.normalization_type == "LN"
        self.ln1, self.ln2 = _LayerNorm(d, ln), _LayerNorm(d, ln)
        self.attn = nn.Module()
        for name in ("W_Q", "W_K", "W_V"):
            self.attn.register_parameter(name, nn.Parameter(torch.empty(h, d, dh)))
        for name in ("b_Q", "b_K", "b_V"):
            self.attn.register_parameter(name, nn.Parameter(torch.zeros(h, dh)))
        self.attn.W_O = nn.Parameter(torch.empty(h, dh, d))
        self.attn.b_O = nn.Parameter(torch.zeros(d))
        self.mlp = nn.Module()
        if m:
            self.mlp.W_in = nn.Parameter(torch.empty(d, m))
            self.mlp.b_in = nn.Parameter(torch.zeros(m))
            self.mlp.W_out = nn.Parameter(torch.empty(m, d))
            self.mlp.b_out = nn.Parameter(torch.zeros(d))


class HookedTransformer(nn.Module):
    """The transformer. ``forward(tokens [b, t]) -> logits [b, t, d_vocab]``; position ``t`` has
    seen tokens ``0..t`` only."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, d))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, d))
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = _LayerNorm(d, cfg.normalization_type == "LN")
        self.W_U = nn.Parameter(torch.empty(d, cfg.d_vocab))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab))
        self.reset_parameters()
        self.register_buffer("_mask", torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool)), persistent=False)

    def reset_parameters(self) -> None:
        """GPT-2-style initialisation, N(0, 0.02²) (output projections scaled by 1/√(2·n_layers)),
        drawn from the config's seed."""
        g = torch.Generator().manual_seed(self.cfg.seed)
        out_std = 0.02 / math.sqrt(2 * self.cfg.n_layers)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.split(".")[-1].startswith("W_"):
                    std = out_std if name.endswith(("W_O", "W_out")) else 0.02
                    p.copy_(torch.randn(p.shape, generator=g) * std)

    @property
    def hook_names(self) -> list[str]:
        """Every hook ``run_with_cache`` can return, in forward order."""
        return self.cfg.hook_names

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._run(tokens, None)

    def run_with_cache(
        self,
        tokens: torch.Tensor,
        names: list[str] | tuple[str, ...] | None = None,
        *,
        fwd_hooks: Iterable[tuple[str, Callable[[torch.Tensor, HookPoint], Any]]] = (),
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and a dict of activations at ``names`` (default: every hook), of a run with ``fwd_hooks``
        (as :meth:`run_with_hooks`; the activation cached at a hook is the one they leave there)."""
        cache: dict[str, torch.Tensor] = {}

        def keep(value: torch.Tensor, hook: HookPoint) -> None:
            cache[hook.name] = value

        wanted = self.hook_names if names is None else names
        logits = self._run(tokens, self._hooks([*fwd_hooks, *((name, keep) for name in wanted)]))
        return logits, cache

    def run_with_hooks(
        self, tokens: torch.Tensor, fwd_hooks: Iterable[tuple[str, Callable[[torch.Tensor, HookPoint], Any]]]
    ) -> torch.Tensor:
        """Logits of a forward pass in which each ``fn`` of ``fwd_hooks`` sees the activation at its hook,
        as TransformerLens calls it (``fn(activation, hook)``, ``hook.name`` the hook's name), and replaces it
        by returning a tensor of the same shape (``None`` leaves it): how an SAE is spliced into the model.
        Several functions at one hook run in order, each seeing what the last returned."""
        return self._run(tokens, self._hooks(fwd_hooks))

    def _hooks(self, fwd_hooks: Iterable[tuple[str, Callable]]) -> dict[str, list[Callable]]:
        hooks: dict[str, list[Callable]] = {}
        for name, fn in fwd_hooks:
            if name not in self.hook_names:
                raise ValueError(f"unknown hook name {name!r}; see HookedTransformer.hook_names")
            if not callable(fn):
                raise TypeError(f"the function at hook {name!r} must be callable, got {fn!r}")
            hooks.setdefault(name, []).append(fn)
        return hooks

    def _run(self, tokens: torch.Tensor, hooks: Mapping[str, list[Callable]] | None) -> torch.Tensor:
        cfg = self.cfg
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
            raise TypeError(f"tokens must be an integer tensor [batch, pos], got {tokens!r:.80}")
        b, t = tokens.shape
        if t > cfg.n_ctx:
            raise ValueError(f"tokens have {t} positions but n_ctx={cfg.n_ctx}")
        hooks = hooks or {}

        def hook(name: str, value: torch.Tensor) -> torch.Tensor:
            for fn in hooks.get(name, ()):
                out = fn(value, HookPoint(name))
                if out is not None:
                    if not isinstance(out, torch.Tensor) or out.shape != value.shape:
                        raise ValueError(
                            f"the function at hook {name!r} must return None or a tensor of shape "
                            f"{tuple(value.shape)}, got {getattr(out, 'shape', out)!r}"
                        )
                    value = out
            return value

        embed = hook("hook_embed", self.W_E[tokens])
        resid = embed + hook("hook_pos_embed", self.W_pos[:t].expand(b, t, cfg.d_model))  # [b, t, d] as TL
        for layer, block in enumerate(self.blocks):
            prefix = f"blocks.{layer}."
            resid = hook(prefix + "hook_resid_pre", resid)
            x = block.ln1(resid)
            a = block.attn
            h, dh = cfg.n_heads, cfg.d_head
            w_qkv = torch.cat([a.W_Q, a.W_K, a.W_V], 0).permute(1, 0, 2).reshape(cfg.d_model, 3 * h * dh)
            qkv = (x @ w_qkv + torch.cat([a.b_Q, a.b_K, a.b_V], 0).reshape(-1)).view(b, t, 3, h, dh)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [b, h, t, d_head]
            name = prefix + "attn.hook_pattern"
            if name in hooks:
                scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
                pattern = hook(name, scores.masked_fill(~self._mask[:t, :t], float("-inf")).softmax(-1))
                z = pattern @ v
            else:
                z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            attn_out = z.transpose(1, 2).reshape(b, t, h * dh) @ a.W_O.reshape(h * dh, cfg.d_model) + a.b_O
            resid = hook(prefix + "hook_resid_mid", resid + attn_out)
            if cfg.d_mlp:
                m = block.mlp
                post = hook(prefix + "mlp.hook_post", _ACTIVATIONS[cfg.act_fn](block.ln2(resid) @ m.W_in + m.b_in))
                resid = resid + post @ m.W_out + m.b_out
            resid = hook(prefix + "hook_resid_post", resid)
        name = "ln_final.hook_normalized"
        if name in hooks:  # TransformerLens's value: before LayerNorm's weight and bias
            normalized = self.ln_final.normalize(resid)
            changed = hook(name, normalized)
            if changed is not normalized:
                return self.ln_final.scale(changed) @ self.W_U + self.b_U
        # The output keeps the fused LayerNorm every model here was trained with (the same bits as before).
        return self.ln_final(resid) @ self.W_U + self.b_U

    @property
    def device(self) -> torch.device:
        return self.W_E.device


def save_transformer(model: HookedTransformer, path: str | Path) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into the folder ``path``, atomically."""
    with atomic_dir(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(model.cfg.to_dict(), indent=2))
    return Path(path)


def load_transformer(path: str | Path, device: str | torch.device = "cpu") -> HookedTransformer:
    """Load a folder written by :func:`save_transformer`."""
    path = Path(path)
    recover_dir(path)
    if not (path / CONFIG_FILE).exists():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {str(path)!r}")
    model = HookedTransformer(TransformerConfig.from_dict(json.loads((path / CONFIG_FILE).read_text())))
    model.load_state_dict(load_file(path / WEIGHTS_FILE))
    return model.to(device)


def transformer_lens_config(cfg: TransformerConfig) -> dict:
    """Keyword arguments for TransformerLens's ``HookedTransformerConfig`` that build ``cfg``'s network,
    ready to receive :func:`transformer_lens_state_dict`'s weights.

    ``seed`` is left out because TransformerLens would seed the global random generators with it, and
    ``init_weights`` is off because the weights are about to be replaced (initialising them would draw
    from the global generator). There is no BOS token: tokens go in as ids.
    """
    fields = {
        "n_layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "n_ctx": cfg.n_ctx,
        "d_head": cfg.d_head,
        "n_heads": cfg.n_heads,
        "d_vocab": cfg.d_vocab,
        "d_vocab_out": cfg.d_vocab,
        "act_fn": cfg.act_fn,
        "normalization_type": cfg.normalization_type,
        "eps": LN_EPS,
        "positional_embedding_type": "standard",
        "attn_only": not cfg.d_mlp,
        "default_prepend_bos": False,
        "init_weights": False,
    }
    if cfg.d_mlp:
        fields["d_mlp"] = cfg.d_mlp
    return fields


def transformer_lens_state_dict(model: HookedTransformer) -> dict[str, torch.Tensor]:
    """``model``'s weights under TransformerLens's names and shapes (detached, on the model's device).

    They are every parameter of a TransformerLens ``HookedTransformer`` built from
    :func:`transformer_lens_config`; its state dict also holds attention-mask buffers, so load them with
    ``strict=False`` or through :func:`to_transformer_lens`, and with no LayerNorm folding. The unused
    second LayerNorm of our attention-only blocks is left out: TransformerLens's blocks have none.
    """
    if not isinstance(model, HookedTransformer):
        raise TypeError(f"model must be a toymodels HookedTransformer, got {type(model).__name__}")
    attn_only = not model.cfg.d_mlp
    return {
        _TL_NAMES.get(name, name): value
        for name, value in model.state_dict().items()
        if not (attn_only and ".ln2." in name)
    }


def to_transformer_lens(model: HookedTransformer):
    """The same network as a TransformerLens ``HookedTransformer`` on ``model``'s device: the same
    logits and the same activations at every hook name both have. Needs TransformerLens installed."""
    try:
        from transformer_lens import HookedTransformer as LensTransformer
    except ImportError as error:
        raise ImportError("to_transformer_lens needs TransformerLens: pip install transformer-lens") from error
    weights = transformer_lens_state_dict(model)
    lens = LensTransformer({**transformer_lens_config(model.cfg), "device": str(model.device)})
    state = lens.state_dict()  # its own mask buffers, then our weights over every parameter
    state.update(weights)
    lens.load_state_dict(state)
    return lens


def from_transformer_lens_state_dict(
    state_dict: Mapping[str, torch.Tensor], cfg: TransformerConfig
) -> HookedTransformer:
    """Our model of config ``cfg`` with the weights of a TransformerLens ``HookedTransformer`` built from
    ``transformer_lens_config(cfg)`` (its ``state_dict()``): the inverse of :func:`transformer_lens_state_dict`.

    Missing, unexpected or wrongly shaped weights raise a ValueError; TransformerLens's attention-mask
    buffers are ignored. Folded LayerNorms (``LNPre``) have no counterpart here.
    """
    if not isinstance(cfg, TransformerConfig):
        raise TypeError(f"cfg must be a TransformerConfig, got {type(cfg).__name__}")
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TypeError(f"state_dict must map names to tensors, got {type(state_dict).__name__}")
    model = HookedTransformer(cfg)
    targets = transformer_lens_state_dict(model)  # views of the model's parameters, by TransformerLens name
    given = {name: value for name, value in state_dict.items() if not name.endswith(_TL_BUFFERS)}
    if set(given) != set(targets):
        raise ValueError(
            f"state_dict does not fit cfg: missing {sorted(set(targets) - set(given))}, "
            f"unexpected {sorted(set(given) - set(targets))}"
        )
    with torch.no_grad():
        for name, target in targets.items():
            if given[name].shape != target.shape:
                raise ValueError(
                    f"state_dict[{name!r}] has shape {tuple(given[name].shape)}, expected {tuple(target.shape)}"
                )
            target.copy_(given[name])
    return model


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats. ``targets`` are token ids ``[b, t]`` or, for training on a
    process's exact next-token distribution, probabilities ``[b, t, d_vocab]`` (soft targets)."""
    logp = logits.log_softmax(-1)
    if targets.is_floating_point():
        return -(targets * logp).sum(-1).mean()
    return F.nll_loss(logp.flatten(0, 1), targets.flatten())


def train_transformer(
    model: HookedTransformer,
    batches: Iterable,
    train: TrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place with Adam on ``train.steps`` batches (a :class:`toymodels.training.TrainConfig`).

    Each batch is a token tensor ``[b, t + 1]`` (inputs ``[:, :-1]``, targets ``[:, 1:]``) or a pair
    ``(inputs [b, t], targets)`` with targets as in :func:`next_token_loss`. Checkpoints and resume
    work as for SAEs (:func:`toymodels.training.fit`).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, betas=train.betas)
    device = model.device

    def step_fn(batch, step: int):
        inputs, targets = (batch[:, :-1], batch[:, 1:]) if isinstance(batch, torch.Tensor) else batch
        loss = next_token_loss(model(inputs.to(device)), targets.to(device))
        gradient_step(optimizer, loss, train, step)
        return inputs.numel(), lambda: {"loss": float(loss.detach())}

    return fit(model, optimizer, step_fn, batches, train, checkpoint_dir, progress, "transformer")
