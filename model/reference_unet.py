"""The ReferenceNet: an SD UNet2D (diffusers blocks, diffusers parameter names) without output head.

It runs once per video at timestep 0 on the reference latent; what matters are the ``norm1`` outputs
of its transformer blocks (captured by ``ReferenceAttentionControl``). Like the official class it has
no ``conv_norm_out``/``conv_out``: ``forward`` returns the last up-block's output.
"""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2DCrossAttn, get_down_block, get_up_block
from torch import nn

from anycharv.errors import ConfigError
from anycharv.model.unet_common import check_widths, per_block, timestep_batch

DOWN_2D = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_2D = ("CrossAttnUpBlock2D", "UpBlock2D")


class ReferenceUNet2D(ModelMixin, ConfigMixin):
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        down_block_types: Sequence[str] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                           "CrossAttnDownBlock2D", "DownBlock2D"),
        mid_block_type: str | None = "UNetMidBlock2DCrossAttn",
        up_block_types: Sequence[str] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                         "CrossAttnUpBlock2D"),
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 768,
        num_attention_heads: int | Sequence[int] = 8,
        use_linear_projection: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
    ):
        super().__init__()
        if len(down_block_types) != len(block_out_channels) or len(up_block_types) != len(block_out_channels):
            raise ConfigError("down_block_types/up_block_types: need one entry per block_out_channels value")
        heads = per_block(num_attention_heads, len(block_out_channels), "num_attention_heads")
        check_widths(block_out_channels, heads, norm_num_groups)
        temb_dim = block_out_channels[0] * 4
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], temb_dim)
        common = dict(temb_channels=temb_dim, resnet_eps=norm_eps, resnet_act_fn=act_fn,
                      resnet_groups=norm_num_groups, cross_attention_dim=cross_attention_dim,
                      use_linear_projection=use_linear_projection)

        self.down_blocks = nn.ModuleList([])
        self.up_blocks = nn.ModuleList([])
        output_channel = block_out_channels[0]
        for i, kind in enumerate(down_block_types):
            if kind not in DOWN_2D:
                raise ConfigError(f"down_block_types: unsupported block {kind!r} (expected one of {DOWN_2D})")
            input_channel, output_channel = output_channel, block_out_channels[i]
            self.down_blocks.append(get_down_block(
                kind, num_layers=layers_per_block, in_channels=input_channel, out_channels=output_channel,
                add_downsample=i < len(block_out_channels) - 1, num_attention_heads=heads[i],
                attention_head_dim=output_channel // heads[i], downsample_padding=downsample_padding, **common,
            ))

        if mid_block_type == "UNetMidBlock2DCrossAttn":
            self.mid_block = UNetMidBlock2DCrossAttn(
                in_channels=block_out_channels[-1], temb_channels=temb_dim, resnet_eps=norm_eps,
                resnet_act_fn=act_fn, resnet_groups=norm_num_groups, output_scale_factor=mid_block_scale_factor,
                num_attention_heads=heads[-1], cross_attention_dim=cross_attention_dim,
                use_linear_projection=use_linear_projection,
            )
        elif mid_block_type is None:
            self.mid_block = None
        else:
            raise ConfigError(f"mid_block_type: unsupported block {mid_block_type!r}")

        reversed_channels = list(reversed(block_out_channels))
        reversed_heads = list(reversed(heads))
        output_channel = reversed_channels[0]
        for i, kind in enumerate(up_block_types):
            if kind not in UP_2D:
                raise ConfigError(f"up_block_types: unsupported block {kind!r} (expected one of {UP_2D})")
            prev_output_channel, output_channel = output_channel, reversed_channels[i]
            input_channel = reversed_channels[min(i + 1, len(block_out_channels) - 1)]
            self.up_blocks.append(get_up_block(
                kind, num_layers=layers_per_block + 1, in_channels=input_channel, out_channels=output_channel,
                prev_output_channel=prev_output_channel, add_upsample=i < len(block_out_channels) - 1,
                resolution_idx=i, num_attention_heads=reversed_heads[i],
                attention_head_dim=output_channel // reversed_heads[i], **common,
            ))

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, in, h, w) -> last up-block output (B, block_out_channels[0], h, w)."""
        batch, _, height, width = sample.shape
        upsamplers = sum(1 for block in self.up_blocks if block.upsamplers is not None)
        force_size = height % 2**upsamplers != 0 or width % 2**upsamplers != 0

        t = timestep_batch(timestep, batch, sample.device)
        emb = self.time_embedding(self.time_proj(t).to(dtype=sample.dtype))

        x = self.conv_in(sample)
        skips = (x,)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                x, block_skips = block(x, emb, encoder_hidden_states=encoder_hidden_states)
            else:
                x, block_skips = block(x, emb)
            skips += block_skips
        if self.mid_block is not None:
            x = self.mid_block(x, emb, encoder_hidden_states=encoder_hidden_states)
        for i, block in enumerate(self.up_blocks):
            count = len(block.resnets)
            block_skips, skips = skips[-count:], skips[:-count]
            size = skips[-1].shape[-2:] if force_size and i < len(self.up_blocks) - 1 else None
            if getattr(block, "has_cross_attention", False):
                x = block(x, block_skips, emb, encoder_hidden_states=encoder_hidden_states, upsample_size=size)
            else:
                x = block(x, block_skips, emb, upsample_size=size)
        return x
