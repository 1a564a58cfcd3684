"""What both UNets share, written once: the SD UNet skeleton (input conv, timestep embedding, the
channel plan of the down and up paths, skip routing) and small helpers (timestep broadcasting,
per-block head counts, frame folding).

The ReferenceNet (2D, diffusers blocks) and the denoising UNet (3D, our blocks) differ only in the
blocks they put on this skeleton, so a fix to the skeleton reaches both. Their ``__init__``
signatures must stay explicit for ``register_to_config``; the keys they share are listed in
``SHARED_CONFIG_KEYS`` and a test checks that names and defaults agree.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from anycharv.errors import ConfigError

# Config keys both UNets take with the same meaning and default (block type names differ only by
# 2D/3D, in_channels by what the UNet reads).
SHARED_CONFIG_KEYS = (
    "in_channels", "down_block_types", "mid_block_type", "up_block_types", "block_out_channels",
    "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn", "norm_num_groups", "norm_eps",
    "cross_attention_dim", "num_attention_heads", "use_linear_projection", "flip_sin_to_cos", "freq_shift",
)


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


def down_channel_plan(block_out_channels: Sequence[int]) -> list[tuple[int, int, bool]]:
    """(in, out, add_downsample) of each down block: SD's plan, every block but the last halves the size."""
    last = len(block_out_channels) - 1
    inputs = [block_out_channels[0], *block_out_channels[:-1]]
    return [(cin, cout, i < last) for i, (cin, cout) in enumerate(zip(inputs, block_out_channels))]


def up_channel_plan(block_out_channels: Sequence[int]) -> list[tuple[int, int, int, bool]]:
    """(in, prev_output, out, add_upsample) of each up block, mirroring the down path: ``in`` is the
    width of the skips it concatenates last, ``prev_output`` that of the block below."""
    widths = list(reversed(block_out_channels))
    last = len(widths) - 1
    return [(widths[min(i + 1, last)], widths[max(i - 1, 0)], widths[i], i < last) for i in range(len(widths))]


class UNetSkeleton(ModelMixin, ConfigMixin):
    """Base of ``ReferenceUNet2D`` and ``DenoisingUNet3D``: builds and runs the parts they share.

    Not a model of its own; subclasses call ``_init_skeleton`` first in ``__init__`` and then append
    their blocks to ``down_blocks`` / ``up_blocks`` and set ``mid_block``.
    """

    _supports_gradient_checkpointing = True

    def _init_skeleton(self, in_channels: int, down_block_types: Sequence[str], up_block_types: Sequence[str],
                       block_out_channels: Sequence[int], num_attention_heads: int | Sequence[int],
                       norm_num_groups: int, flip_sin_to_cos: bool, freq_shift: int) -> tuple[list[int], int]:
        """Check the shared keys, build ``conv_in`` and the timestep embedding, register the empty
        ``down_blocks``/``up_blocks`` (before ``mid_block``: the official module order, which
        state dicts and seeded initialisation follow). Returns (heads per down block, time-embedding width)."""
        if len(down_block_types) != len(block_out_channels) or len(up_block_types) != len(block_out_channels):
            raise ConfigError("down_block_types/up_block_types: need one entry per block_out_channels value")
        heads = per_block(num_attention_heads, len(block_out_channels), "num_attention_heads")
        check_widths(block_out_channels, heads, norm_num_groups)
        width = block_out_channels[0]
        temb_dim = width * 4
        self.conv_in = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.time_proj = Timesteps(width, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(width, temb_dim)
        self.down_blocks = nn.ModuleList([])
        self.up_blocks = nn.ModuleList([])
        return heads, temb_dim

    def _embed_time(self, timestep, sample: torch.Tensor) -> torch.Tensor:
        """(B, temb) embedding of a scalar or (B,) timestep, in the sample's dtype."""
        t = timestep_batch(timestep, sample.shape[0], sample.device)
        return self.time_embedding(self.time_proj(t).to(dtype=sample.dtype))

    def _up_block_inputs(self, skips: tuple[torch.Tensor, ...], height: int, width: int
                         ) -> Iterator[tuple[nn.Module, tuple[torch.Tensor, ...], torch.Size | None]]:
        """Per up block: (block, the skips it consumes, the size to upsample to). The size is given only
        when the latent is not divisible by the total downsampling, so odd sizes come back exactly."""
        factor = 2 ** sum(1 for block in self.up_blocks if block.upsamplers is not None)
        force_size = height % factor != 0 or width % factor != 0
        for i, block in enumerate(self.up_blocks):
            count = len(block.resnets)
            block_skips, skips = skips[-count:], skips[:-count]
            size = skips[-1].shape[-2:] if force_size and i < len(self.up_blocks) - 1 else None
            yield block, block_skips, size
