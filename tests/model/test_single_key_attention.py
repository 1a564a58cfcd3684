"""``SingleKeyAttnProcessor``: cross-attention to one context token broadcast without the attention,
equal to diffusers' SDPA result, and SDPA itself wherever the shortcut does not hold."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from anycharv.model.single_key_attention import SingleKeyAttnProcessor
from anycharv.model.tiny import build_tiny_components


def _pair(dim=32, ctx_dim=24, heads=4, dropout=0.0):
    torch.manual_seed(0)
    kwargs = dict(query_dim=dim, cross_attention_dim=ctx_dim, heads=heads, dim_head=dim // heads, bias=False,
                  dropout=dropout)
    ours = Attention(**kwargs, processor=SingleKeyAttnProcessor())
    sdpa = Attention(**kwargs, processor=AttnProcessor2_0())
    sdpa.load_state_dict(ours.state_dict())
    return ours, sdpa


@pytest.mark.parametrize("tokens", [1, 3])
def test_equals_sdpa_and_skips_the_query_only_for_one_token(tokens):
    ours, sdpa = _pair()
    x, ctx = torch.randn(5, 40, 32), torch.randn(5, tokens, 24)
    calls = []
    ours.to_q.register_forward_hook(lambda *a: calls.append(1))
    got = ours(x, encoder_hidden_states=ctx)
    assert got.shape == (5, 40, 32)
    torch.testing.assert_close(got, sdpa(x, encoder_hidden_states=ctx), rtol=0, atol=1e-6)
    assert (len(calls) == 0) == (tokens == 1)


def test_gradients_match_sdpa():
    ours, sdpa = _pair()
    x, ctx = torch.randn(2, 10, 32), torch.randn(2, 1, 24)
    ours(x, encoder_hidden_states=ctx).square().sum().backward()
    sdpa(x, encoder_hidden_states=ctx).square().sum().backward()
    for (name, a), (_, b) in zip(ours.named_parameters(), sdpa.named_parameters()):
        grad_a = a.grad if a.grad is not None else torch.zeros_like(a)  # to_q / to_k: no gradient, zero in SDPA
        torch.testing.assert_close(grad_a, b.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_active_dropout_and_masks_take_sdpa():
    ours, _ = _pair(dropout=0.5)
    ours.train()
    assert not SingleKeyAttnProcessor._single_key(ours, torch.randn(2, 4, 32), torch.randn(2, 1, 24), None)
    ours.eval()
    assert SingleKeyAttnProcessor._single_key(ours, torch.randn(2, 4, 32), torch.randn(2, 1, 24), None)
    assert not SingleKeyAttnProcessor._single_key(ours, torch.randn(2, 4, 32), torch.randn(2, 1, 24),
                                                  torch.zeros(2, 1, 1))
    assert not SingleKeyAttnProcessor._single_key(ours, torch.randn(2, 4, 32), None, None)


def test_both_unets_use_it_for_cross_attention_only():
    parts = build_tiny_components(with_vae=False, with_image_encoder=False)
    for name in ("reference_unet", "denoising_unet"):
        procs = {k: m.processor for k, m in parts[name].named_modules() if isinstance(m, Attention)}
        cross = [k for k in procs if k.endswith(".attn2")]
        assert cross and all(isinstance(procs[k], SingleKeyAttnProcessor) for k in cross), name
        assert not any(isinstance(p, SingleKeyAttnProcessor) for k, p in procs.items() if k not in cross), name
