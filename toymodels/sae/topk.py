"""TopK-style SAEs: TopK with AuxK, BatchTopK, and Matryoshka-BatchTopK.

Their sparsity does not depend on the scale of the codes, so the decoder they reconstruct with is
always unit-norm. Two ways to keep it so (``decoder_norm``):

- ``"unit"``: the rows are renormalised after every step (the base class's policy);
- ``"free"`` (the default, measured better in ``benchmarks/training_parity.py``): the rows may take any
  norm ``n``; the SAE computes with ``n`` folded into the encoder (``W_enc * n``, ``b_enc * n``) and
  reconstructs with ``W_dec / n`` (SAELens's ``rescale_acts_by_decoder_norm``). The function is a
  unit-decoder SAE's, but ``n`` is a per-latent encoder gain that Adam learns through the decoder.
  Saving writes those folded weights, so the folder holds a unit-decoder SAE with the same outputs
  bit for bit.

During training only k latents per sample (on average, for the batch variants) are non-zero, so
decoding uses ``embedding_bag`` over the active latents instead of a dense ``[n, d_sae] @ [d_sae, d_in]``
product, and gradients reach only the rows that fired.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toymodels.sae.base import LossTerms, SparseAutoencoder, default_aux_k, mse_loss
from toymodels.sae.config import SAEConfig
from toymodels.sae.registry import register_sae


def sparse_decode(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, w_dec: torch.Tensor, n: int
) -> torch.Tensor:
    """``sum_j vals * w_dec[cols]`` per row, for coordinates sorted by row; differentiable in both."""
    offsets = torch.searchsorted(rows, torch.arange(n, device=rows.device))
    return F.embedding_bag(cols, w_dec, offsets, mode="sum", per_sample_weights=vals)


def top_indices(flat: torch.Tensor, count: int, stride: int = 32) -> torch.Tensor:
    """Indices of the ``count`` largest entries of a 1-D tensor, unsorted.

    A full ``topk`` over a whole batch of pre-activations is slow on CPU. A strided subsample gives a
    threshold that about ``1.2 * count`` entries exceed; if at least ``count`` really do, the answer
    lies among them (an exact shortcut), otherwise fall back to the full ``topk``.
    """
    if count >= flat.numel():
        return torch.arange(flat.numel(), device=flat.device)
    sample = flat[::stride]
    wanted = int(count / stride * 1.2) + 16
    if wanted < sample.numel():
        floor = sample.topk(wanted, sorted=False).values.min()
        candidates = torch.nonzero(flat >= floor).flatten()
        if candidates.numel() >= count:
            return candidates[flat[candidates].topk(count, sorted=False).indices]
    return flat.topk(count, sorted=False).indices


@register_sae
class TopKSAE(SparseAutoencoder):
    """Keep the k largest pre-activations per sample, then ReLU (Gao et al. 2024, "Scaling and
    evaluating sparse autoencoders"). Dead latents are revived by the AuxK loss: the ``aux_k``
    largest pre-activations among dead latents must reconstruct the main model's residual,
    weighted by ``aux_coefficient`` (1/32 in the paper)."""

    architecture = "topk"
    paper = "Gao et al. 2024 (TopK + AuxK)"
    sparsity_knob = "k"
    knob_raises_l0 = True
    sparsity = "topk"
    decoder_policies = ("free", "unit")
    saved_as = "topk"
    suite_defaults = {"k": 4, "dead_after": 20}

    def encoder(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_enc, b_enc)`` as the SAE computes with them: times the decoder row norms under the
        free policy (which then decodes with :meth:`unit_rows`)."""
        if self.decoder_norm == "unit":
            return self.W_enc, self.b_enc
        norms = self.W_dec.norm(dim=1).clamp(min=1e-12)
        return self.W_enc * norms, self.b_enc * norms

    def unit_rows(self) -> torch.Tensor:
        """The decoder the SAE reconstructs with: ``W_dec`` with unit rows."""
        if self.decoder_norm == "unit":
            return self.W_dec
        return self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        w_enc, b_enc = self.encoder()
        return (x - self.b_dec) @ w_enc + b_enc

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.unit_rows() + self.b_dec

    def export_state(self) -> dict[str, torch.Tensor]:
        """The folded weights: a unit-decoder SAE with exactly this SAE's outputs."""
        w_enc, b_enc = self.encoder()
        return {
            "W_enc": w_enc.detach(),
            "b_enc": b_enc.detach(),
            "W_dec": self.unit_rows().detach(),
            "b_dec": self.b_dec.detach(),
        }

    @classmethod
    def loaded_config(cls, cfg: SAEConfig) -> SAEConfig:
        return cfg.replace(decoder_norm="unit")  # a saved folder holds the folded weights

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        vals, idx = pre.topk(self.cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, idx, F.relu(vals))

    def saelens_fields(self) -> dict:
        return {"k": self.cfg.k, "rescale_acts_by_decoder_norm": False}

    def select(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat (row, col) coordinates, sorted, of the latents active in training."""
        idx = pre.topk(self.cfg.k, dim=-1).indices.sort(dim=-1).values
        rows = torch.arange(pre.shape[0], device=pre.device).repeat_interleave(self.cfg.k)
        return rows, idx.flatten()

    def training_loss(self, x: torch.Tensor, progress: float) -> LossTerms:
        pre = self.pre_activations(x)
        with torch.no_grad():
            rows, cols = self.select(pre)
        vals = F.relu(pre[rows, cols])
        x_hat, losses = self.reconstruct(x, rows, cols, vals)
        mse, reconstruction = losses[-1], torch.stack(losses).mean()
        total = reconstruction
        codes = torch.zeros(pre.shape, device=x.device)
        codes[rows, cols] = vals.detach()
        parts = {}
        if self.cfg.aux_coefficient > 0:
            aux = self.aux_loss(x - x_hat.detach(), pre)
            if aux is not None:
                total = total + self.cfg.aux_coefficient * aux
                parts["aux"] = float(aux.detach())
        # AuxK stays under an end-to-end objective: it only revives dead latents, from the residual. Matryoshka's
        # nested prefixes have no single term an end-to-end objective could swap (all of them at once would
        # leave BatchTopK under Matryoshka's name), so it trains locally only.
        single = reconstruction if len(losses) == 1 else None
        return LossTerms(total, mse.detach(), codes, parts, x_hat, single)

    def reconstruct(
        self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The reconstruction from the active latents and the reconstruction losses to average
        (one here; one per nested prefix for Matryoshka, the last being the full dictionary's)."""
        x_hat = sparse_decode(rows, cols, vals, self.unit_rows(), x.shape[0]) + self.b_dec
        return x_hat, [mse_loss(x, x_hat)]

    def aux_loss(self, residual: torch.Tensor, pre: torch.Tensor) -> torch.Tensor | None:
        dead = self.dead_mask()
        if not dead.any():
            return None
        k_aux = min(default_aux_k(self.cfg), int(dead.sum()))
        masked = pre.masked_fill(~dead, float("-inf"))
        vals, idx = masked.topk(k_aux, dim=-1)
        recon = (F.relu(vals).unsqueeze(-1) * self.unit_rows()[idx]).sum(1)
        return mse_loss(residual, recon)


@register_sae
class BatchTopKSAE(TopKSAE):
    """Keep the ``k * batch`` largest ReLU pre-activations across the whole batch, so L0 is k on
    average but varies per sample (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders").

    Inference uses a single threshold θ, the running mean over training batches of the smallest
    kept activation, so a saved model is a JumpReLU SAE with ``threshold = θ`` for every latent.
    """

    architecture = "batchtopk"
    paper = "Bussmann et al. 2024"
    sparsity = "batchtopk"
    saved_as = "jumprelu"
    threshold_momentum = 0.99

    def __init__(self, cfg):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.int64))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.pre_activations(x))
        return pre * (pre > self.threshold)

    def saelens_fields(self) -> dict:
        return {}

    def select(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, m = pre.shape
        flat = F.relu(pre).flatten()
        kept = top_indices(flat, self.cfg.k * n)
        kept = kept[flat[kept] > 0].sort().values
        if self.training and kept.numel():
            smallest = flat[kept].min()
            if int(self.threshold_updates) == 0:
                self.threshold.copy_(smallest)
            else:
                self.threshold.lerp_(smallest, 1 - self.threshold_momentum)
            self.threshold_updates += 1
        return kept // m, kept % m

    def export_state(self) -> dict[str, torch.Tensor]:
        state = super().export_state()
        state["threshold"] = self.threshold.expand(self.cfg.d_sae).clone()
        return state

    @torch.no_grad()
    def import_state(self, weights: dict[str, torch.Tensor]) -> None:
        weights = dict(weights)
        threshold = weights.pop("threshold", None)
        if threshold is None or threshold.shape != (self.cfg.d_sae,) or not bool((threshold == threshold[0]).all()):
            raise ValueError("a BatchTopK SAE needs one shared inference threshold, saved per latent")
        super().import_state(weights)
        self.threshold.copy_(threshold[0])
        self.threshold_updates.fill_(1)


@register_sae
class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    """BatchTopK whose loss sums the reconstruction errors of nested prefixes of the dictionary, so
    early latents must work alone and learn general features (Bussmann et al. 2025, "Learning
    Multi-Level Features with Matryoshka Sparse Autoencoders"; Nabeshima 2024)."""

    architecture = "matryoshka_batchtopk"
    paper = "Bussmann et al. 2025 (nested prefixes on BatchTopK)"
    saved_as = "jumprelu"
    built_for = "hierarchical"  # general parents in early latents, their children later, without absorption

    @classmethod
    def config_strategies(cls, st, d_sae: int) -> dict:
        if d_sae < 2:
            return {}
        inner = st.lists(st.integers(1, d_sae - 1), max_size=3, unique=True)
        return {"matryoshka_prefixes": inner.map(lambda sizes: (*sorted(sizes), d_sae))}

    def prefixes(self) -> tuple[int, ...]:
        if self.cfg.matryoshka_prefixes:
            return self.cfg.matryoshka_prefixes
        sizes, m = [], self.cfg.d_sae
        while m >= max(self.cfg.k, 1) and len(sizes) < 5:
            sizes.append(m)
            m //= 2
        return tuple(sorted(sizes))

    def reconstruct(
        self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Add the prefixes' contributions one block at a time, with the MSE after each."""
        x_hat, losses, start, w_dec = self.b_dec.expand(x.shape[0], -1), [], 0, self.unit_rows()
        for stop in self.prefixes():
            part = (cols >= start) & (cols < stop)
            x_hat = x_hat + sparse_decode(rows[part], cols[part], vals[part], w_dec, x.shape[0])
            losses.append(mse_loss(x, x_hat))
            start = stop
        return x_hat, losses
