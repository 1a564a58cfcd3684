"""The AnyCharV denoising UNet: SD-1.5 layout inflated to video, with motion modules and pose injection.

Input ``sample`` (B, 9, F, h, w) = [noisy latent 4 | target-video latent 4 | mask 1]; pose features
(B, C0, F, h, w) are added to the ``conv_in`` output. Everything 2D runs per frame (frames folded
into the batch); motion modules attend across the F frames of the current call.
Defaults describe the released (SD-1.5 sized) model.
"""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from anycharv.errors import ConfigError
from anycharv.model.unet_3d_blocks import DOWN_BLOCKS, UP_BLOCKS, UNetMidBlock3DCrossAttn
from anycharv.model.unet_common import check_widths, fold_frames, per_block, timestep_batch, unfold_frames

SUPPORTED_ATTENTION_BLOCK_TYPES = ("Temporal_Self",)


class DenoisingUNet3D(ModelMixin, ConfigMixin):
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 9,
        out_channels: int = 4,
        down_block_types: Sequence[str] = ("CrossAttnDownBlock3D", "CrossAttnDownBlock3D",
                                           "CrossAttnDownBlock3D", "DownBlock3D"),
        mid_block_type: str | None = "UNetMidBlock3DCrossAttn",
        up_block_types: Sequence[str] = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D",
                                         "CrossAttnUpBlock3D"),
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
        use_motion_module: bool = True,
        motion_module_resolutions: Sequence[int] = (1, 2, 4, 8),
        motion_module_mid_block: bool = True,
        motion_module_decoder_only: bool = False,
        motion_num_attention_heads: int = 8,
        motion_num_transformer_block: int = 1,
        motion_attention_block_types: Sequence[str] = ("Temporal_Self", "Temporal_Self"),
        motion_temporal_position_encoding: bool = True,
        motion_temporal_position_encoding_max_len: int = 32,
        motion_temporal_attention_dim_div: int = 1,
    ):
        super().__init__()
        if len(down_block_types) != len(block_out_channels) or len(up_block_types) != len(block_out_channels):
            raise ConfigError("down_block_types/up_block_types: need one entry per block_out_channels value")
        for kind in motion_attention_block_types:
            if kind not in SUPPORTED_ATTENTION_BLOCK_TYPES:
                raise ConfigError(f"motion_attention_block_types: {kind!r} is not supported (only Temporal_Self)")
        heads = per_block(num_attention_heads, len(block_out_channels), "num_attention_heads")
        check_widths(block_out_channels, heads, norm_num_groups)
        motion_kwargs = dict(
            num_attention_heads=motion_num_attention_heads,
            num_transformer_block=motion_num_transformer_block,
            num_attention_blocks=len(motion_attention_block_types),
            temporal_position_encoding=motion_temporal_position_encoding,
            temporal_position_encoding_max_len=motion_temporal_position_encoding_max_len,
            temporal_attention_dim_div=motion_temporal_attention_dim_div,
        )
        temb_dim = block_out_channels[0] * 4
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], temb_dim)
        common = dict(temb_channels=temb_dim, eps=norm_eps, groups=norm_num_groups, act=act_fn,
                      motion_kwargs=motion_kwargs, cross_attention_dim=cross_attention_dim,
                      use_linear_projection=use_linear_projection)

        # Registration order down_blocks, up_blocks, mid_block (as the official class): the
        # reference-attention pairing walks blocks in this order.
        self.down_blocks = nn.ModuleList([])
        self.up_blocks = nn.ModuleList([])
        output_channel = block_out_channels[0]
        for i, kind in enumerate(down_block_types):
            if kind not in DOWN_BLOCKS:
                raise ConfigError(f"down_block_types: unknown block {kind!r}")
            input_channel, output_channel = output_channel, block_out_channels[i]
            self.down_blocks.append(DOWN_BLOCKS[kind](
                in_channels=input_channel, out_channels=output_channel, num_layers=layers_per_block,
                add_downsample=i < len(block_out_channels) - 1, downsample_padding=downsample_padding,
                use_motion=use_motion_module and 2**i in motion_module_resolutions and not motion_module_decoder_only,
                heads=heads[i], **common,
            ))

        if mid_block_type == "UNetMidBlock3DCrossAttn":
            self.mid_block = UNetMidBlock3DCrossAttn(
                block_out_channels[-1], temb_dim, norm_eps, norm_num_groups, act_fn, mid_block_scale_factor,
                heads[-1], cross_attention_dim, use_linear_projection,
                use_motion_module and motion_module_mid_block, motion_kwargs,
            )
        elif mid_block_type is None:
            self.mid_block = None
        else:
            raise ConfigError(f"mid_block_type: unknown block {mid_block_type!r}")

        reversed_channels = list(reversed(block_out_channels))
        reversed_heads = list(reversed(heads))
        output_channel = reversed_channels[0]
        for i, kind in enumerate(up_block_types):
            if kind not in UP_BLOCKS:
                raise ConfigError(f"up_block_types: unknown block {kind!r}")
            prev_output_channel, output_channel = output_channel, reversed_channels[i]
            input_channel = reversed_channels[min(i + 1, len(block_out_channels) - 1)]
            # the official code indexes up-block resolutions as 2**(3-i) (written for 4 levels)
            self.up_blocks.append(UP_BLOCKS[kind](
                in_channels=input_channel, prev_output_channel=prev_output_channel, out_channels=output_channel,
                num_layers=layers_per_block + 1, add_upsample=i < len(block_out_channels) - 1,
                use_motion=use_motion_module and 2 ** (3 - i) in motion_module_resolutions,
                heads=reversed_heads[i], **common,
            ))

        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                pose_cond_fea: torch.Tensor | None = None) -> torch.Tensor:
        """(B, in, F, h, w) -> (B, out, F, h, w); ``encoder_hidden_states`` (B, tokens, D)."""
        batch, _, frames, height, width = sample.shape
        upsamplers = sum(1 for block in self.up_blocks if block.upsamplers is not None)
        force_size = height % 2**upsamplers != 0 or width % 2**upsamplers != 0

        t = timestep_batch(timestep, batch, sample.device)
        emb = self.time_embedding(self.time_proj(t).to(dtype=sample.dtype))
        emb = emb.repeat_interleave(frames, dim=0)
        context = encoder_hidden_states.repeat_interleave(frames, dim=0)

        x = self.conv_in(fold_frames(sample))
        if pose_cond_fea is not None:
            x = x + fold_frames(pose_cond_fea).to(x.dtype)

        skips = (x,)
        for block in self.down_blocks:
            x, block_skips = block(x, emb, context, frames)
            skips += block_skips
        if self.mid_block is not None:
            x = self.mid_block(x, emb, context, frames)
        for i, block in enumerate(self.up_blocks):
            count = len(block.resnets)
            block_skips, skips = skips[-count:], skips[:-count]
            size = skips[-1].shape[-2:] if force_size and i < len(self.up_blocks) - 1 else None
            x = block(x, block_skips, emb, context, frames, upsample_size=size)

        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return unfold_frames(x, frames)
