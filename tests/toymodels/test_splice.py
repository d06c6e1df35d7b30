"""Splicing: the reconstruction hook, the spliced logits and the output KL against hand computations."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from stand_ins import Affine

from groundtruth.strategies import seeds
from toymodels.splice import output_kl, reconstruction_hook, spliced_logits
from toymodels.superposition import ToyModel, ToyModelConfig
from toymodels.transformer import HookedTransformer, TransformerConfig

CFG = TransformerConfig(n_layers=2, d_model=8, n_ctx=5, d_vocab=4, n_heads=2, d_mlp=16, seed=3)


@settings(max_examples=10, deadline=None)
@given(seed=seeds(), layer=st.integers(0, 1), scale=st.sampled_from([0.0, 0.5, 1.0]))
def test_splicing_equals_replacing_the_activation_by_hand(seed, layer, scale):
    """Splicing an SAE is running the model with the activation replaced by the SAE's output."""
    model = HookedTransformer(CFG.replace(seed=seed % 1000))
    tokens = torch.randint(0, CFG.d_vocab, (3, CFG.n_ctx), generator=torch.Generator().manual_seed(seed))
    hook = f"blocks.{layer}.hook_resid_post"
    with torch.no_grad():
        spliced = spliced_logits(model, tokens, Affine(scale, 0.25), hook)
        by_hand = model.run_with_hooks(tokens, fwd_hooks=[(hook, lambda v, h: scale * v + 0.25)])
        clean = model(tokens)
    assert torch.equal(spliced, by_hand)
    assert torch.equal(spliced_logits(model, tokens, Affine(1.0), hook), clean)


def test_output_kl_is_the_hand_computed_kl():
    clean = torch.tensor([[[0.0, math.log(3.0)]]])  # p = (1/4, 3/4)
    other = torch.tensor([[[0.0, 0.0]]])  # q = (1/2, 1/2)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert float(output_kl(clean, other)) == pytest.approx(expected, rel=1e-6)
    assert float(output_kl(clean, clean)) == pytest.approx(0.0, abs=1e-7)
    # averaged over positions: a second position with KL 0 halves it
    two = output_kl(torch.cat([clean, clean], 1), torch.cat([other, clean], 1))
    assert float(two) == pytest.approx(expected / 2, rel=1e-6)


def test_output_kl_is_differentiable_in_the_spliced_logits_and_refuses_other_shapes():
    clean = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    logits = torch.zeros(2, 3, 5, requires_grad=True)
    output_kl(clean, logits).backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match=r"clean logits' shape \(2, 3, 5\)"):
        output_kl(clean, torch.zeros(2, 3, 4))


def test_an_object_without_encode_and_decode_is_refused():
    with pytest.raises(TypeError, match="encode and decode"):
        reconstruction_hook(torch.nn.Linear(2, 2))


def test_the_toy_models_output_is_its_forward_from_the_hidden_layer():
    model = ToyModel(ToyModelConfig(n_features=6, d_hidden=2))
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(model.output(model.hidden(x)), model(x))
    with pytest.raises(ValueError, match="d_hidden=2"):
        model.output(torch.zeros(3))
