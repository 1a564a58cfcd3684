"""``ShortSequenceAttnProcessor``: diffusers' SDPA result on short sequences, SDPA itself elsewhere."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from anycharv.model import short_attention
from anycharv.model.motion_module import TemporalSelfAttention
from anycharv.model.short_attention import ShortSequenceAttnProcessor


def _pair(dim=32, heads=4):
    torch.manual_seed(0)
    ours = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False,
                     processor=ShortSequenceAttnProcessor())
    sdpa = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False, processor=AttnProcessor2_0())
    sdpa.load_state_dict(ours.state_dict())
    return ours, sdpa


@pytest.mark.parametrize("length", [1, 16, 24, short_attention.SHORT_SEQUENCE])
def test_short_sequences_match_sdpa(length):
    ours, sdpa = _pair()
    x = torch.randn(50, length, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), sdpa(x), rtol=0, atol=2e-6)


def test_batched_path_is_the_one_taken_on_short_sequences_and_sdpa_on_long_ones(monkeypatch):
    ours, sdpa = _pair()
    calls = []
    monkeypatch.setattr(torch, "baddbmm", lambda *a, **k: calls.append(1) or torch.Tensor.baddbmm(*a, **k))
    with torch.no_grad():
        ours(torch.randn(3, 8, 32))
        assert len(calls) == 1
        long = torch.randn(2, short_attention.SHORT_SEQUENCE + 1, 32)
        assert torch.equal(ours(long), sdpa(long))  # the base processor, bit for bit
        mask = torch.zeros(3, 1, 8)
        x = torch.randn(3, 8, 32)
        assert torch.equal(ours(x, attention_mask=mask), sdpa(x, attention_mask=mask))
    assert len(calls) == 1


def test_gradients_match_sdpa():
    ours, sdpa = _pair()
    x = torch.randn(6, 12, 32)
    ours(x).square().sum().backward()
    sdpa(x).square().sum().backward()
    for (name, a), (_, b) in zip(ours.named_parameters(), sdpa.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_motion_attention_uses_it():
    assert isinstance(TemporalSelfAttention(32, 4, 8, True, 24).processor, ShortSequenceAttnProcessor)
