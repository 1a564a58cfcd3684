"""Small helpers both UNets share: timestep broadcasting, per-block head counts, frame folding."""

from __future__ import annotations

from typing import Sequence

import torch

from anycharv.errors import ConfigError


def timestep_batch(timestep, batch: int, device: torch.device) -> torch.Tensor:
    """A scalar, 0-dim or (batch,) timestep as a (batch,) tensor (diffusers convention)."""
    if not torch.is_tensor(timestep):
        dtype = torch.float32 if isinstance(timestep, float) else torch.int64
        timestep = torch.tensor([timestep], dtype=dtype, device=device)
    elif timestep.ndim == 0:
        timestep = timestep[None].to(device)
    else:
        timestep = timestep.to(device)
    if timestep.shape[0] not in (1, batch):
        raise ValueError(f"timestep: {timestep.shape[0]} values for a batch of {batch}")
    return timestep.expand(batch)


def per_block(value: int | Sequence[int], count: int, name: str) -> list[int]:
    """An int (same for every block) or one value per down block."""
    if isinstance(value, int):
        return [value] * count
    values = list(value)
    if len(values) != count:
        raise ConfigError(f"{name}: {len(values)} values for {count} down blocks")
    return values


def check_widths(block_out_channels: Sequence[int], heads: Sequence[int], groups: int) -> None:
    """Fail early, naming the key, instead of deep inside a block constructor."""
    for width, head in zip(block_out_channels, heads):
        if width % head:
            raise ConfigError(f"num_attention_heads: {head} does not divide block width {width}")
        if width % groups:
            raise ConfigError(f"norm_num_groups: {groups} does not divide block width {width}")


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B*F, C, H, W), batch-major, so 2D layers run per frame."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def unfold_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B*F, C, H, W) -> (B, C, F, H, W)."""
    bf, c, h, w = x.shape
    return x.reshape(bf // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)
