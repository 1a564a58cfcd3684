"""Cross-attention to a single context token, computed without the attention.

AnyCharV's UNets cross-attend to one CLIP image token. With one key the softmax weight is exactly 1
for every query, so the output of every token is ``to_out(to_v(context))``: the same row for all of
them. The query projection, the attention and all but one row of the output projection are then
wasted work (two of the transformer block's token x width x width products). This processor computes
the one row and broadcasts it. The result is the one SDPA gives (softmax of a single score is 1.0;
the output projection of one row may round in another order than the same row inside a larger
product). Anything else (more tokens, a mask, norms, dropout that is active) goes to diffusers' SDPA
processor, unchanged; the gradients to the query side are zero either way.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


class SingleKeyAttnProcessor:
    """``AttnProcessor2_0``, with the broadcast shortcut for plain attention to one context token."""

    def __init__(self):
        self.base = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        if not self._single_key(attn, hidden_states, encoder_hidden_states, attention_mask):
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        value = attn.to_v(encoder_hidden_states)
        out = attn.to_out[1](attn.to_out[0](value)) / attn.rescale_output_factor
        return out.expand(-1, hidden_states.shape[1], -1)

    @staticmethod
    def _single_key(attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states, attention_mask) -> bool:
        if encoder_hidden_states is None or attention_mask is not None or hidden_states.ndim != 3:
            return False
        dropout = attn.to_out[1]
        return (encoder_hidden_states.ndim == 3 and encoder_hidden_states.shape[1] == 1
                and encoder_hidden_states.shape[0] == hidden_states.shape[0]
                and attn.spatial_norm is None and attn.group_norm is None and not attn.norm_cross
                and not attn.residual_connection and (not dropout.training or dropout.p == 0))


def use_single_key_cross_attention(model: torch.nn.Module) -> None:
    """Give every cross-attention (``attn2``) of ``model``'s transformer blocks the processor above."""
    from diffusers.models.attention import BasicTransformerBlock

    for block in model.modules():
        if isinstance(block, BasicTransformerBlock) and getattr(block, "attn2", None) is not None:
            block.attn2.set_processor(SingleKeyAttnProcessor())
