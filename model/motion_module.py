"""AnimateDiff-style temporal transformer ("Vanilla" motion module) on frame-folded tensors.

Parameter names follow the AnimateDiff / Moore-AnimateAnyone layout
(``temporal_transformer.{norm,proj_in,transformer_blocks.N.{attention_blocks,norms,ff,ff_norm},proj_out}``)
so official and ``mm_sd_v15*`` state dicts load without renaming. Quirks that parity needs: the
GroupNorm always has 32 groups and eps 1e-6; the sinusoidal position encoding is added *after* the
LayerNorm, with positions counted inside the current call's frames.
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from anycharv.model.short_attention import ShortSequenceAttnProcessor

MOTION_GROUPS = 32  # fixed in the official code, independent of the UNet's norm_num_groups


def sinusoidal_table(max_len: int, dim: int) -> torch.Tensor:
    """The (1, max_len, dim) table: sin on even channels, cos on odd ones (transformer paper)."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, max_len, dim)
    table[0, :, 0::2] = torch.sin(position * div_term)
    table[0, :, 1::2] = torch.cos(position * div_term)[:, : dim // 2]
    return table


class PositionEncoding(nn.Module):
    """Adds ``pe[:, :frames]``; ``pe`` is a persistent buffer because checkpoints carry it."""

    def __init__(self, dim: int, max_len: int = 32):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_len, dim), persistent=True)

    def rebuild_buffers(self, device: torch.device | str = "cpu") -> None:
        """Compute the table again on ``device`` (after a meta-device build whose checkpoint lacks it)."""
        with torch.device(device):
            self.pe = sinusoidal_table(self.pe.shape[1], self.pe.shape[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1]
        if frames > self.pe.shape[1]:
            raise ValueError(
                f"motion module: {frames} frames exceed the position table length {self.pe.shape[1]}"
            )
        return x + self.pe[:, :frames].to(x.dtype)


class TemporalSelfAttention(Attention):
    """diffusers ``Attention`` run across frames at every spatial location, on hidden states already laid
    out as one sequence of frames per location, ``(b*h*w, f, c)`` (``ShortSequenceAttnProcessor``: SDPA,
    or batched matrix products for short sequences on CPU)."""

    def __init__(self, dim: int, heads: int, dim_head: int, position_encoding: bool, max_len: int):
        super().__init__(query_dim=dim, heads=heads, dim_head=dim_head, bias=False,
                         processor=ShortSequenceAttnProcessor())
        self.pos_encoder = PositionEncoding(dim, max_len) if position_encoding else None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.pos_encoder is not None:
            hidden_states = self.pos_encoder(hidden_states)
        return super().forward(hidden_states)


class TemporalTransformerBlock(nn.Module):
    """LayerNorm -> temporal self-attention (+residual) per attention block, then LayerNorm -> GEGLU FF, on
    ``(b*h*w, f, c)`` hidden states (every op but the attention acts per token, so any token order works)."""

    def __init__(self, dim: int, heads: int, dim_head: int, num_attention_blocks: int,
                 position_encoding: bool, max_len: int):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            TemporalSelfAttention(dim, heads, dim_head, position_encoding, max_len)
            for _ in range(num_attention_blocks)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_attention_blocks))
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            hidden_states = attention(norm(hidden_states)) + hidden_states
        return self.ff(self.ff_norm(hidden_states)) + hidden_states


class TemporalTransformer3D(nn.Module):
    """GroupNorm -> linear proj_in -> temporal blocks -> linear proj_out, plus the input (residual).

    The frames of each location are gathered into one sequence once, before ``proj_in``, and scattered
    back once, after ``proj_out``: one layout copy each way per module instead of two per attention block."""

    def __init__(self, channels: int, heads: int, num_layers: int, num_attention_blocks: int,
                 position_encoding: bool, max_len: int, attention_dim_div: int):
        super().__init__()
        dim_head = channels // heads // attention_dim_div
        self.norm = nn.GroupNorm(MOTION_GROUPS, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(channels, heads, dim_head, num_attention_blocks, position_encoding, max_len)
            for _ in range(num_layers)
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        bf, channels, height, width = hidden_states.shape
        batch, tokens = bf // num_frames, height * width
        residual = hidden_states
        x = self.norm(hidden_states)
        # (b f) c h w -> (b h w) f c
        x = x.reshape(batch, num_frames, channels, tokens).permute(0, 3, 1, 2).reshape(batch * tokens, num_frames,
                                                                                        channels)
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x)
        x = self.proj_out(x)
        # (b h w) f c -> (b f) c h w
        x = x.reshape(batch, tokens, num_frames, channels).permute(0, 2, 3, 1).reshape(bf, channels, height, width)
        return x + residual


class MotionModule(nn.Module):
    """One motion module: input and output (batch*frames, C, h, w), frames folded batch-major."""

    def __init__(self, channels: int, num_attention_heads: int = 8, num_transformer_block: int = 1,
                 num_attention_blocks: int = 2, temporal_position_encoding: bool = True,
                 temporal_position_encoding_max_len: int = 32, temporal_attention_dim_div: int = 1,
                 zero_init: bool = True):
        super().__init__()
        self.temporal_transformer = TemporalTransformer3D(
            channels, num_attention_heads, num_transformer_block, num_attention_blocks,
            temporal_position_encoding, temporal_position_encoding_max_len, temporal_attention_dim_div,
        )
        if zero_init:  # a fresh module is the identity, so a 2D UNet's behaviour is kept
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.temporal_transformer(hidden_states, num_frames)
