"""The AnyCharV denoising UNet: SD-1.5 layout inflated to video, with motion modules and pose injection.

Input ``sample`` (B, 9, F, h, w) = [noisy latent 4 | target-video latent 4 | mask 1]; pose features
(B, C0, F, h, w) are added to the ``conv_in`` output. Everything 2D runs per frame (frames folded
into the batch); motion modules attend across the F frames of the current call.
Defaults describe the released (SD-1.5 sized) model.
"""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers.configuration_utils import register_to_config

# DiffusionPipeline.from_pretrained looks ModelMixin up in the component's own module to find
# its load method, so it must be a name here although UNetSkeleton brings the base class.
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from torch import nn

from anycharv.errors import ConfigError
from anycharv.model.single_key_attention import use_single_key_cross_attention
from anycharv.model.unet_3d_blocks import DOWN_BLOCKS, UP_BLOCKS, UNetMidBlock3DCrossAttn
from anycharv.model.unet_common import UNetSkeleton, down_channel_plan, fold_frames, unfold_frames, up_channel_plan

SUPPORTED_ATTENTION_BLOCK_TYPES = ("Temporal_Self",)


class DenoisingUNet3D(UNetSkeleton):
    r"""
    The AnyCharV denoising UNet: the SD-1.5 UNet inflated to video, with motion modules and pose input.

    Every 2D layer (convs, GroupNorms, spatial transformers) runs per frame; an AnimateDiff motion
    module after each resnet/transformer pair attends across the frames of the call. The spatial
    self-attentions also attend to the ReferenceNet's tokens when ``ReferenceAttentionControl`` is
    installed. Parameter names follow the official checkpoint. Defaults describe the released model.

    Args:
        in_channels (`int`, *optional*, defaults to 9):
            Channels of `sample`: noisy latent (4), target-video latent (4), mask (1), in that order.
        out_channels (`int`, *optional*, defaults to 4): Channels of the prediction (v-prediction latent).
        down_block_types (`Sequence[str]`, *optional*,
                defaults to three `"CrossAttnDownBlock3D"` then `"DownBlock3D"`):
            Block per resolution, one of `"CrossAttnDownBlock3D"`, `"DownBlock3D"`.
        mid_block_type (`str` or `None`, *optional*, defaults to `"UNetMidBlock3DCrossAttn"`):
            `"UNetMidBlock3DCrossAttn"`, or `None` for no mid block.
        up_block_types (`Sequence[str]`, *optional*, defaults to `"UpBlock3D"` then three `"CrossAttnUpBlock3D"`):
            Block per resolution, one of `"CrossAttnUpBlock3D"`, `"UpBlock3D"`.
        block_out_channels (`Sequence[int]`, *optional*, defaults to `(320, 640, 1280, 1280)`):
            Width of each resolution level; every level but the last halves the spatial size.
        layers_per_block (`int`, *optional*, defaults to 2):
            Resnet (+ transformer, + motion module) layers per down block; up blocks have one more.
        downsample_padding (`int`, *optional*, defaults to 1): Padding of the stride-2 downsampling convs.
        mid_block_scale_factor (`float`, *optional*, defaults to 1.0): Output scale of the mid-block resnets.
        act_fn (`str`, *optional*, defaults to `"silu"`): Resnet activation.
        norm_num_groups (`int`, *optional*, defaults to 32): GroupNorm groups; must divide every width.
        norm_eps (`float`, *optional*, defaults to 1e-5): GroupNorm epsilon.
        cross_attention_dim (`int`, *optional*, defaults to 768):
            Width of `encoder_hidden_states` (the projected CLIP image embedding).
        num_attention_heads (`int` or `Sequence[int]`, *optional*, defaults to 8):
            Spatial attention heads, for all blocks or one value per down block; must divide the block width.
        use_linear_projection (`bool`, *optional*, defaults to `False`):
            Linear instead of 1x1-conv projections around the spatial transformers (SD-2 style).
        flip_sin_to_cos (`bool`, *optional*, defaults to `True`): Cosine first in the timestep encoding.
        freq_shift (`int`, *optional*, defaults to 0): Frequency shift of the timestep encoding.
        use_motion_module (`bool`, *optional*, defaults to `True`):
            Build motion modules at all (`False`: the image-level stage-1 network).
        motion_module_resolutions (`Sequence[int]`, *optional*, defaults to `(1, 2, 4, 8)`):
            Downsampling factors that get motion modules: down block `i` has them when `2**i` is
            listed, up block `i` when `2**(3 - i)` is (the official indexing, written for 4 levels).
        motion_module_mid_block (`bool`, *optional*, defaults to `True`): A motion module in the mid block.
        motion_module_decoder_only (`bool`, *optional*, defaults to `False`): Motion modules only on the up path.
        motion_num_attention_heads (`int`, *optional*, defaults to 8): Heads of the temporal attentions.
        motion_num_transformer_block (`int`, *optional*, defaults to 1): Temporal transformer blocks per module.
        motion_attention_block_types (`Sequence[str]`, *optional*, defaults to `("Temporal_Self", "Temporal_Self")`):
            Attention layers per temporal block; only `"Temporal_Self"` exists.
        motion_temporal_position_encoding (`bool`, *optional*, defaults to `True`):
            Add the sinusoidal frame-position encoding in the temporal attentions.
        motion_temporal_position_encoding_max_len (`int`, *optional*, defaults to 32):
            Length of the position table: the most frames one call may have.
        motion_temporal_attention_dim_div (`int`, *optional*, defaults to 1):
            Divides the temporal attention's head width (`width // heads // div`).
    """

    # The keys in SHARED_CONFIG_KEYS are a copy of ReferenceUNet2D.__init__'s: keep names and
    # defaults in sync (tests/model/test_model_unet_skeleton.py checks).
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
        for kind in motion_attention_block_types:
            if kind not in SUPPORTED_ATTENTION_BLOCK_TYPES:
                raise ConfigError(f"motion_attention_block_types: {kind!r} is not supported (only Temporal_Self)")
        heads, temb_dim = self._init_skeleton(in_channels, down_block_types, up_block_types, block_out_channels,
                                              num_attention_heads, norm_num_groups, flip_sin_to_cos, freq_shift)
        motion_kwargs = dict(
            num_attention_heads=motion_num_attention_heads,
            num_transformer_block=motion_num_transformer_block,
            num_attention_blocks=len(motion_attention_block_types),
            temporal_position_encoding=motion_temporal_position_encoding,
            temporal_position_encoding_max_len=motion_temporal_position_encoding_max_len,
            temporal_attention_dim_div=motion_temporal_attention_dim_div,
        )
        common = dict(temb_channels=temb_dim, eps=norm_eps, groups=norm_num_groups, act=act_fn,
                      motion_kwargs=motion_kwargs, cross_attention_dim=cross_attention_dim,
                      use_linear_projection=use_linear_projection)

        for i, (kind, (cin, cout, add_downsample)) in enumerate(zip(down_block_types,
                                                                     down_channel_plan(block_out_channels))):
            if kind not in DOWN_BLOCKS:
                raise ConfigError(f"down_block_types: unknown block {kind!r}")
            self.down_blocks.append(DOWN_BLOCKS[kind](
                in_channels=cin, out_channels=cout, num_layers=layers_per_block,
                add_downsample=add_downsample, downsample_padding=downsample_padding,
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

        up_heads = list(reversed(heads))
        for i, (kind, (cin, prev, cout, add_upsample)) in enumerate(zip(up_block_types,
                                                                         up_channel_plan(block_out_channels))):
            if kind not in UP_BLOCKS:
                raise ConfigError(f"up_block_types: unknown block {kind!r}")
            # the official code indexes up-block resolutions as 2**(3-i) (written for 4 levels)
            self.up_blocks.append(UP_BLOCKS[kind](
                in_channels=cin, prev_output_channel=prev, out_channels=cout,
                num_layers=layers_per_block + 1, add_upsample=add_upsample,
                use_motion=use_motion_module and 2 ** (3 - i) in motion_module_resolutions,
                heads=up_heads[i], **common,
            ))

        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)
        use_single_key_cross_attention(self)

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                pose_cond_fea: torch.Tensor | None = None) -> torch.Tensor:
        r"""
        Predict the denoising target for one window of frames.

        Args:
            sample (`torch.Tensor` of shape `(B, in_channels, F, h, w)`):
                `[noisy latent | target-video latent | mask]` per frame, at latent size (image size / 8).
                `F` is at most `motion_temporal_position_encoding_max_len`.
            timestep (`torch.Tensor`, `int` or `float`): A scalar or one value per batch item, shape `(B,)`.
            encoder_hidden_states (`torch.Tensor` of shape `(B, tokens, cross_attention_dim)`):
                Cross-attention context, shared by the frames of an item (one CLIP image token).
            pose_cond_fea (`torch.Tensor` of shape `(B, block_out_channels[0], F, h, w)`, *optional*):
                ``PoseGuider`` features, added to the ``conv_in`` output.

        Returns:
            `torch.Tensor` of shape `(B, out_channels, F, h, w)`: the model prediction (v for AnyCharV).
        """
        _, _, frames, height, width = sample.shape
        emb = self._embed_time(timestep, sample).repeat_interleave(frames, dim=0)
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
        for block, block_skips, size in self._up_block_inputs(skips, height, width):
            x = block(x, block_skips, emb, context, frames, upsample_size=size)

        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return unfold_frames(x, frames)
