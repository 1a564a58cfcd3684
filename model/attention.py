"""Attention processors of the reference mechanism, set on the self-attention (``attn1``) of diffusers
``BasicTransformerBlock``s. Both delegate the actual attention to diffusers' SDPA processor.

* Writer (ReferenceNet): stores its input - the block's ``norm1`` output - then attends normally.
* Reader (denoising UNet): keys/values = [own tokens ; bank repeated per frame, (b, f) order];
  under classifier-free guidance the first (uncond) half of the batch attends to its own tokens only.

At inference (no autograd, one reference for the whole batch) the reader projects the bank to keys and
values once per bank and reuses them for every frame, window and step: the official code projects the
same reference tokens again for each of them. Projection is row-wise, so the result is the same math.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


@dataclass
class CallState:
    """Per-call facts the reader needs but attention layers cannot see (set by a UNet pre-hook)."""

    num_frames: int | None = None
    # training's condition dropout: True for the batch items that attend to their own tokens only
    drop_reference: torch.Tensor | None = None


class ReferenceWriterProcessor:
    """Records ``hidden_states`` (= norm1 output) on every call; the bank keeps autograd history."""

    def __init__(self, base=None):
        self.base = base or AttnProcessor2_0()
        self.bank: list[torch.Tensor] = []

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is None:  # self-attention only
            self.bank.append(hidden_states.clone())
        return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReferenceReaderProcessor:
    """Self-attention extended with reference tokens held in ``bank`` ((B_ref, N_ref, C) or None)."""

    def __init__(self, state: CallState, do_classifier_free_guidance: bool, base=None):
        self.base = base or AttnProcessor2_0()
        self.state = state
        self.do_classifier_free_guidance = do_classifier_free_guidance
        self.bank: torch.Tensor | None = None

    @property
    def bank(self) -> torch.Tensor | None:
        return self._bank

    @bank.setter
    def bank(self, value: torch.Tensor | None) -> None:
        self._bank = value
        self._projected: tuple | None = None  # (dtype, device, keys, values) of the current bank

    def _reference_tokens(self, hidden_states: torch.Tensor) -> torch.Tensor:
        total = hidden_states.shape[0]
        bank = self.bank
        frames = self.state.num_frames or max(total // bank.shape[0], 1)
        if total % frames:
            raise ValueError(f"reference attention: {total} rows are not a multiple of {frames} frames")
        batch = total // frames
        if bank.shape[0] == 2 and batch > 2 and batch % 2 == 0 and self.do_classifier_free_guidance:
            bank = bank.repeat_interleave(batch // 2, dim=0)  # [uncond, cond] for batched windows of each half
        if bank.shape[0] != batch:
            if bank.shape[0] != 1:
                raise ValueError(
                    f"reference attention: bank batch {bank.shape[0]} does not match the UNet batch {batch}"
                )
            bank = bank.expand(batch, -1, -1)
        # cast to the compute dtype: fp32 runs see fp16-rounded values, as in the official code
        return bank.to(hidden_states.dtype).repeat_interleave(frames, dim=0)

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        if self.bank is None or encoder_hidden_states is not None:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if self._can_reuse_projection(attn, hidden_states, attention_mask):
            return self._with_projected_bank(attn, hidden_states)
        keys = torch.cat([hidden_states, self._reference_tokens(hidden_states)], dim=1)
        if self.state.drop_reference is not None:
            return self._with_dropout(attn, hidden_states, keys, attention_mask, temb)
        if not self.do_classifier_free_guidance:
            return self.base(attn, hidden_states, keys, attention_mask, temb)
        half = hidden_states.shape[0] // 2
        uncond = self.base(attn, hidden_states[:half], None, attention_mask, temb)
        cond = self.base(attn, hidden_states[half:], keys[half:], attention_mask, temb)
        return torch.cat([uncond, cond], dim=0)

    def _with_dropout(self, attn: Attention, hidden_states: torch.Tensor, keys: torch.Tensor, attention_mask,
                      temb) -> torch.Tensor:
        """Items marked in ``state.drop_reference`` (B,) attend without the reference tokens."""
        rows = self.state.drop_reference.to(hidden_states.device)
        rows = rows.repeat_interleave(hidden_states.shape[0] // rows.shape[0])
        if not rows.any():
            return self.base(attn, hidden_states, keys, attention_mask, temb)
        if rows.all():
            return self.base(attn, hidden_states, None, attention_mask, temb)
        out = torch.empty_like(hidden_states)
        out[rows] = self.base(attn, hidden_states[rows], None, attention_mask, temb)
        out[~rows] = self.base(attn, hidden_states[~rows], keys[~rows], attention_mask, temb)
        return out

    # ----------------------------------------------------------------------------- inference fast path
    def _can_reuse_projection(self, attn: Attention, hidden_states: torch.Tensor, attention_mask) -> bool:
        """One shared reference (bank batch 1, or [uncond, cond] under CFG), no autograd, and the plain
        self-attention of a transformer block (what the fast path reproduces)."""
        shared = self._bank.shape[0] == (2 if self.do_classifier_free_guidance else 1)
        plain = (attention_mask is None and hidden_states.ndim == 3 and attn.spatial_norm is None
                 and attn.group_norm is None and attn.norm_q is None and attn.norm_k is None
                 and not attn.residual_connection and attn.rescale_output_factor == 1.0)
        return (shared and plain and self.state.drop_reference is None and not torch.is_grad_enabled()
                and isinstance(self.base, AttnProcessor2_0))

    def _projected_bank(self, attn: Attention, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (1, N_ref, inner) of the conditional reference, projected once per bank."""
        cached = self._projected
        if cached is None or cached[0] != like.dtype or cached[1] != like.device:
            # the cond row; cast to the compute dtype first (fp32 runs see the fp16-rounded bank, as the official)
            tokens = self._bank[-1:].to(like.device, like.dtype)
            cached = (like.dtype, like.device, attn.to_k(tokens), attn.to_v(tokens))
            self._projected = cached
        return cached[2], cached[3]

    def _with_projected_bank(self, attn: Attention, hidden_states: torch.Tensor) -> torch.Tensor:
        """AttnProcessor2_0's math for [own tokens ; reference tokens], reference keys/values reused."""
        total = hidden_states.shape[0]
        heads = attn.heads
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        ref_key, ref_value = self._projected_bank(attn, hidden_states)
        head_dim = key.shape[-1] // heads
        first = total // 2 if self.do_classifier_free_guidance else 0  # rows before it attend to themselves

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], -1, heads, head_dim).transpose(1, 2)

        parts = []
        if first:
            parts.append(F.scaled_dot_product_attention(split(query[:first]), split(key[:first]),
                                                        split(value[:first])))
        rows = total - first
        keys = torch.cat([key[first:], ref_key.expand(rows, -1, -1)], dim=1)
        values = torch.cat([value[first:], ref_value.expand(rows, -1, -1)], dim=1)
        parts.append(F.scaled_dot_product_attention(split(query[first:]), split(keys), split(values)))
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        out = out.transpose(1, 2).reshape(total, -1, heads * head_dim).to(query.dtype)
        return attn.to_out[1](attn.to_out[0](out))
