"""Attention over short sequences (the motion modules' frames) as three batched matrix products on CPU.

The temporal attention of a motion module attends over the frames of a window (16-24) at every spatial
location: thousands of tiny attention problems (head width 8-40). PyTorch's CPU flash-attention kernel
works through them in blocks sized for long sequences; for such short ones ``baddbmm -> softmax -> bmm``
over all of them at once is faster: measured on a 2-core Xeon, a first-level motion module of the
benchmark's UNet (64 channels, 16x16, 48 frame rows) went from 42 to 30 ms, about 9% of a denoising step.
The math is the same; the sums run in another order (1e-7..1e-6 apart here, far inside the parity
tolerances). Elsewhere (an accelerator, an attention mask, long sequences) it is diffusers' SDPA
processor, unchanged.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

SHORT_SEQUENCE = 64


class ShortSequenceAttnProcessor:
    """``AttnProcessor2_0`` for plain self-attention (no mask, no norms, no residual), with the batched
    matrix-product path on CPU for sequences of at most ``SHORT_SEQUENCE`` tokens."""

    def __init__(self):
        self.base = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        if not self._short(attn, hidden_states, encoder_hidden_states, attention_mask):
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        batch, length, _ = hidden_states.shape
        heads = attn.heads
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = query.shape[-1] // heads

        def per_head(x: torch.Tensor) -> torch.Tensor:  # (b, l, h*d) -> (b*h, l, d)
            return x.view(batch, length, heads, head_dim).transpose(1, 2).reshape(batch * heads, length, head_dim)

        query, key, value = per_head(query), per_head(key), per_head(value)
        scores = torch.baddbmm(query.new_empty(batch * heads, length, length), query, key.transpose(1, 2),
                               beta=0, alpha=attn.scale)
        out = torch.bmm(scores.softmax(dim=-1), value)
        out = out.view(batch, heads, length, head_dim).transpose(1, 2).reshape(batch, length, heads * head_dim)
        return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor

    @staticmethod
    def _short(attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states, attention_mask) -> bool:
        plain = (encoder_hidden_states is None and attention_mask is None and attn.spatial_norm is None
                 and attn.group_norm is None and attn.norm_q is None and attn.norm_k is None
                 and not attn.residual_connection)
        return (plain and hidden_states.device.type == "cpu" and hidden_states.ndim == 3
                and hidden_states.shape[1] <= SHORT_SEQUENCE)
