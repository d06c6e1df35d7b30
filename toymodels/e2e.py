"""End-to-end SAE objectives: train an SAE on what the frozen model computes from its reconstruction.

Braun, Taylor, Goldowsky-Dill & Sharkey (2024), "Identifying Functionally Important Features with End-to-End
Sparse Dictionary Learning" (arXiv:2405.12241; the loss definitions and coefficients below are those of their
code, ApolloResearch/e2e_sae). Three objectives for an SAE at one place in a frozen model:

- ``"local"``: the architecture's own loss (reconstruction + sparsity), on activations read from the model;
- ``"e2e"``: the architecture's loss with its local reconstruction term swapped for the output term, the
  KL(clean ‖ spliced) of the next-token distributions (:func:`toymodels.splice.output_kl`), times
  ``output_coefficient`` (1.0, the paper's);
- ``"e2e+ds"``: e2e (output coefficient 0.5) plus ``downstream_coefficient`` (2.5 in all) split evenly over the
  downstream residual positions, each the mean squared error (over every element) between the spliced and the
  clean residual stream there: the resid_pre of every later block (as their configs place them, the final
  residual after the last block left to the KL term), skipping the one that is the SAE's own output.

Whatever else the architecture minimises (its sparsity penalty, Gated's gate loss, TopK's AuxK) stays: e2e
total = ``terms.total - terms.reconstruction`` + output term [+ downstream term] (:class:`LossTerms`).
For the toy model of superposition the downstream computation is :meth:`ToyModel.output`, whose ReLU output is
not a distribution: the output term is the squared error of the outputs, summed over features and averaged
over samples (the pinned MSE, on the scale of the local term it replaces); it has no layer in between, so
``"e2e+ds"`` is refused there. The model never trains: its parameters are kept out of the graph.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from groundtruth.checks import check_int, check_real
from toymodels.sae.base import LossTerms, mse_loss
from toymodels.splice import output_kl
from toymodels.superposition import ToyModel
from toymodels.transformer import HookedTransformer

OBJECTIVES = ("local", "e2e", "e2e+ds")
# The paper's coefficients (ApolloResearch/e2e_sae, gpt2_e2e.yaml and gpt2_e2e_recon.yaml).
OUTPUT_COEFFICIENTS = {"local": 0.0, "e2e": 1.0, "e2e+ds": 0.5}
DOWNSTREAM_COEFFICIENT = 2.5


def downstream_hooks(model: HookedTransformer, hook: str) -> list[str]:
    """The residual positions e2e+ds reconstructs for an SAE at ``hook``: ``blocks.k.hook_resid_pre`` for
    every block ``k`` after the one ``hook`` is in, except the one equal to the SAE's output (after
    ``blocks.l.hook_resid_post``). Empty when ``hook`` is in the last block or after it."""
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", hook)
    if match is None:  # hook_embed / hook_pos_embed feed block 0; ln_final.hook_normalized is after every block
        first = 1 if hook in ("hook_embed", "hook_pos_embed") else model.cfg.n_layers
    else:
        first = int(match.group(1)) + (2 if match.group(2) == "hook_resid_post" else 1)
    return [f"blocks.{k}.hook_resid_pre" for k in range(first, model.cfg.n_layers)]


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Run with ``module``'s parameters out of autograd's graph (gradients still flow through its operations
    to their inputs), restoring each parameter's ``requires_grad`` afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass
class CleanRun:
    """A batch through the unmodified model: the SAE's input ``x [n, d_in]`` and what the spliced run is
    compared with (the clean output, and the clean downstream activations for e2e+ds)."""

    batch: torch.Tensor  # what the model takes: tokens [b, t] or the toy model's hidden activations [n, m]
    x: torch.Tensor
    output: torch.Tensor
    downstream: dict[str, torch.Tensor]
    real: torch.Tensor | None = None  # bool [b, t]: the positions that count (None: all), see Objective's pad


class Objective:
    """How an SAE at ``hook`` of a frozen ``model`` is trained: ``"local"``, ``"e2e"`` or ``"e2e+ds"``.

    ``model`` is a :class:`HookedTransformer` (then ``hook`` names an activation ``[b, t, d]``; batches are token
    tensors ``[b, t]``) or a :class:`ToyModel` (``hook`` None; batches are its hidden activations ``[n, m]``,
    or objects with an ``x`` attribute such as :class:`groundtruth.ActivationBatch`). Pass it to
    :func:`toymodels.sae.train_sae` as ``objective=``. ``output_coefficient`` None takes the paper's for the
    objective (1.0 for e2e, 0.5 for e2e+ds); ``downstream_coefficient`` is the paper's total over positions.
    With ``pad``, positions whose input token is ``pad`` (a game's padding after its end) do not count: their
    activations are not the SAE's to reconstruct (they stay clean in the spliced run), and the output and
    downstream terms leave them out.
    """

    def __init__(
        self,
        model: HookedTransformer | ToyModel,
        hook: str | None = None,
        objective: str = "e2e",
        *,
        output_coefficient: float | None = None,
        downstream_coefficient: float = DOWNSTREAM_COEFFICIENT,
        pad: int | None = None,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if isinstance(model, HookedTransformer):
            if hook not in model.cfg.sae_hook_names:
                raise ValueError(f"hook must name a [batch, pos, d] activation of the model, got {hook!r}")
            self.downstream = downstream_hooks(model, hook) if objective == "e2e+ds" else []
            if objective == "e2e+ds" and not self.downstream:
                raise ValueError(
                    f"objective 'e2e+ds' needs a residual position after hook {hook!r}, and the model "
                    f"(n_layers={model.cfg.n_layers}) has none; use 'e2e'"
                )
        elif isinstance(model, ToyModel):
            if hook is not None:
                raise ValueError(f"hook must be None for a ToyModel (its hidden layer is the only place), got {hook!r}")
            if objective == "e2e+ds":
                raise ValueError(
                    "objective 'e2e+ds' needs layers after the SAE; a ToyModel has none between its "
                    "hidden layer and output; use 'e2e'"
                )
            self.downstream = []
        else:
            raise TypeError(f"model must be a HookedTransformer or a ToyModel, got {type(model).__name__}")
        self.output_coefficient = OUTPUT_COEFFICIENTS[objective] if output_coefficient is None else output_coefficient
        check_real("output_coefficient", self.output_coefficient, 0.0)
        check_real("downstream_coefficient", downstream_coefficient, 0.0)
        if pad is not None:
            if not isinstance(model, HookedTransformer):
                raise ValueError(f"pad must be None for a ToyModel (it reads no tokens), got {pad!r}")
            check_int("pad", pad, 0, model.cfg.d_vocab - 1)
        self.model, self.hook, self.objective, self.pad = model, hook, objective, pad
        self.downstream_coefficient = downstream_coefficient

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def identity(self) -> dict:
        """What a run under this objective is, beyond the SAE's and the train config: recorded in its checkpoints,
        so a checkpoint of another objective, hook or model configuration is refused instead of resumed."""
        model_cfg = self.model.config if isinstance(self.model, ToyModel) else self.model.cfg
        weights = hashlib.sha256()
        for name, value in sorted(self.model.state_dict().items()):
            weights.update(name.encode() + value.detach().cpu().contiguous().numpy().tobytes())
        return {
            "objective": self.objective,
            "hook": self.hook,
            "model": {"kind": type(self.model).__name__, **model_cfg.to_dict(), "weights_sha256": weights.hexdigest()},
            "output_coefficient": self.output_coefficient,
            "downstream_coefficient": self.downstream_coefficient,
            **({"pad": self.pad} if self.pad is not None else {}),
        }

    @torch.no_grad()
    def clean(self, batch) -> CleanRun:
        """Run ``batch`` through the unmodified model (on its device)."""
        batch = (batch.x if hasattr(batch, "x") else batch).to(self.device)
        if isinstance(self.model, ToyModel):
            return CleanRun(batch, batch, self.model.output(batch), {})
        if not isinstance(batch, torch.Tensor) or batch.ndim != 2 or batch.is_floating_point():
            raise TypeError(f"batches must be integer token tensors [batch, pos], got {batch!r:.80}")
        logits, cache = self.model.run_with_cache(batch, [self.hook, *self.downstream])
        acts, downstream = cache[self.hook], {h: cache[h] for h in self.downstream}
        if self.pad is None:
            return CleanRun(batch, acts.reshape(-1, acts.shape[-1]), logits, downstream)
        real = batch != self.pad
        return CleanRun(batch, acts[real], logits, downstream, real)

    def spliced(self, clean: CleanRun, x_hat: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The output, and the downstream activations, of the model with ``x_hat`` in place of the SAE's input
        (differentiable in ``x_hat``, not in the model's parameters)."""
        with frozen(self.model):
            if isinstance(self.model, ToyModel):
                return self.model.output(x_hat), {}

            def splice(activation, hook):
                if clean.real is None:
                    return x_hat.reshape(activation.shape).to(activation.dtype)
                return activation.masked_scatter(clean.real[..., None], x_hat.to(activation.dtype))

            return self.model.run_with_cache(clean.batch, self.downstream, fwd_hooks=[(self.hook, splice)])

    def output_loss(self, clean_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """KL(clean ‖ spliced) for a transformer; the outputs' squared error for a ToyModel."""
        if isinstance(self.model, ToyModel):
            return mse_loss(clean_output, output)
        return output_kl(clean_output, output)

    def loss(self, clean: CleanRun, terms: LossTerms) -> LossTerms:
        """``terms`` (the SAE's loss on ``clean.x``) with this objective's total; the terms go in ``parts``."""
        if self.objective == "local":
            return terms
        if terms.x_hat is None or terms.reconstruction is None:
            raise TypeError(
                "an e2e objective needs the SAE's training_loss to return LossTerms with x_hat and reconstruction, "
                "one local reconstruction term to swap (Matryoshka SAEs, whose loss sums nested prefixes, have none)"
            )
        output, seen = self.spliced(clean, terms.x_hat)
        real = (lambda t: t) if clean.real is None else (lambda t: t[clean.real])
        out_loss = self.output_loss(real(clean.output), real(output))
        total = terms.total - terms.reconstruction + self.output_coefficient * out_loss
        parts = {**terms.parts, "output": float(out_loss.detach())}
        if self.downstream:
            ds = torch.stack([F.mse_loss(real(seen[h]), real(clean.downstream[h])) for h in self.downstream]).mean()
            total = total + self.downstream_coefficient * ds
            parts["downstream"] = float(ds.detach())
        return replace(terms, total=total, parts=parts)

    def step(self, trainer, clean: CleanRun, step: int) -> tuple[int, LossTerms]:
        """One step of ``trainer`` (a :class:`toymodels.sae.Trainer`) on a clean run (:meth:`clean`): the
        number of SAE inputs trained on and the loss terms."""
        if clean.x.device != trainer.sae.device:
            raise ValueError(f"the SAE is on {trainer.sae.device} but the model is on {clean.x.device}; move one")
        return clean.x.shape[0], trainer.step(clean.x, step, lambda terms: self.loss(clean, terms))


__all__ = ["DOWNSTREAM_COEFFICIENT", "OBJECTIVES", "OUTPUT_COEFFICIENTS", "CleanRun", "Objective", "downstream_hooks"]
