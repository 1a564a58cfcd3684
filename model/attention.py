"""Attention processors of the reference mechanism, set on the self-attention (``attn1``) of diffusers
``BasicTransformerBlock``s. Both delegate the actual attention to diffusers' SDPA processor.

* Writer (ReferenceNet): stores its input - the block's ``norm1`` output - then attends normally.
* Reader (denoising UNet): keys/values = [own tokens ; bank repeated per frame, (b, f) order];
  under classifier-free guidance the first (uncond) half of the batch attends to its own tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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

    def _reference_tokens(self, hidden_states: torch.Tensor) -> torch.Tensor:
        total = hidden_states.shape[0]
        bank = self.bank
        frames = self.state.num_frames or max(total // bank.shape[0], 1)
        if total % frames:
            raise ValueError(f"reference attention: {total} rows are not a multiple of {frames} frames")
        batch = total // frames
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
