"""Deliberately broken SAEs, each with a bug seen in public SAE code; the conformance suite must catch
every one. Each factory mirrors the built-in one in `toymodels.sae.factories` except for the bug."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from toymodels.sae import JumpReLUSAE, SAEConfig, StandardSAE, TopKSAE
from toymodels.sae.factories import jumprelu, standard_resampling, topk


class CopyResampleSAE(StandardSAE):
    """Resampling writes the new directions into a copy of the weights, so nothing is resampled."""

    @torch.no_grad()
    def resample_dead(self, x, optimizer, step):
        dead = torch.nonzero(self.dead_mask()).flatten()
        w_dec, b_enc = self.W_dec.clone(), self.b_enc.clone()  # the bug: copies
        w_dec[dead] = x[: dead.numel()] / x[: dead.numel()].norm(dim=1, keepdim=True)
        b_enc[dead] = 0.0
        return int(dead.numel())


class TopKPlusOneSAE(TopKSAE):
    """Keeps k + 1 latents at inference."""

    def encode(self, x):
        pre = self.pre_activations(x)
        vals, idx = pre.topk(self.cfg.k + 1, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, idx, F.relu(vals))


class WrongAxisNormSAE(StandardSAE):
    """Normalises decoder columns instead of rows after each step."""

    @torch.no_grad()
    def after_optimizer_step(self, x, codes, optimizer, step):
        self.W_dec /= self.W_dec.norm(dim=0, keepdim=True).clamp(min=1e-12)
        fired = (codes > 0).any(0)
        self.steps_since_fired += 1
        self.steps_since_fired[fired] = 0


class FlippedAuxSAE(TopKSAE):
    """The AuxK loss enters with the wrong sign: dead latents are pushed to make the residual worse."""

    def aux_loss(self, residual, pre):
        aux = super().aux_loss(residual, pre)
        return None if aux is None else -aux


class NoInferenceThresholdSAE(JumpReLUSAE):
    """Trains with its threshold but never applies it at inference."""

    def encode(self, x):
        return F.relu(self.pre_activations(x))


def _swap(factory, cls):
    def make(d_in: int, d_sae: int, *, seed: int = 0, **overrides):
        sae = factory(d_in, d_sae, seed=seed, **overrides)
        broken = cls(sae.cfg)
        broken.load_state_dict(sae.state_dict())
        return broken

    make.__name__ = cls.__name__
    return make


copy_resample = _swap(standard_resampling, CopyResampleSAE)
topk_plus_one = _swap(topk, TopKPlusOneSAE)
wrong_axis_norm = _swap(standard_resampling, WrongAxisNormSAE)
flipped_aux = _swap(topk, FlippedAuxSAE)
no_inference_threshold = _swap(jumprelu, NoInferenceThresholdSAE)


def no_seed(d_in: int, d_sae: int):
    """A factory without the ``seed`` keyword the suite passes: refused before any property runs."""
    return topk(d_in, d_sae)


# broken factory -> the property that must catch it
EXPECTED = {
    "copy_resample": "dead_latents_revived",
    "topk_plus_one": "declared_sparsity",
    "wrong_axis_norm": "decoder_norm_policy",
    "flipped_aux": "recovers_easy_ground_truth",
    "no_inference_threshold": "declared_sparsity",
}
__all__ = ["EXPECTED", "SAEConfig", "no_seed", *EXPECTED]
