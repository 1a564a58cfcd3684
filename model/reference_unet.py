"""The ReferenceNet: an SD UNet2D (diffusers blocks, diffusers parameter names) without output head.

It runs once per video at timestep 0 on the reference latent; what matters are the ``norm1`` outputs
of its transformer blocks (captured by ``ReferenceAttentionControl``). Like the official class it has
no ``conv_norm_out``/``conv_out``: ``forward`` returns the last up-block's output.
"""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers.configuration_utils import register_to_config

# DiffusionPipeline.from_pretrained looks ModelMixin up in the component's own module to find
# its load method, so it must be a name here although UNetSkeleton brings the base class.
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2DCrossAttn, get_down_block, get_up_block

from anycharv.errors import ConfigError
from anycharv.model.single_key_attention import use_single_key_cross_attention
from anycharv.model.unet_common import UNetSkeleton, down_channel_plan, up_channel_plan

DOWN_2D = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_2D = ("CrossAttnUpBlock2D", "UpBlock2D")


class ReferenceUNet2D(UNetSkeleton):
    r"""
    The ReferenceNet: a Stable Diffusion UNet2D whose transformer blocks provide the reference tokens.

    Parameter names are diffusers' ``UNet2DConditionModel`` names, so SD-1.5 and official checkpoints
    load as they are; unlike it there is no ``conv_norm_out``/``conv_out`` (the official class has
    none either: the output is never used, only the ``norm1`` inputs of the self-attentions, which
    ``ReferenceAttentionControl`` captures). Defaults describe the released (SD-1.5 sized) model.

    Args:
        in_channels (`int`, *optional*, defaults to 4):
            Channels of `sample`: the VAE latent of the reference image.
        down_block_types (`Sequence[str]`, *optional*,
                defaults to three `"CrossAttnDownBlock2D"` then `"DownBlock2D"`):
            diffusers block per resolution, one of `"CrossAttnDownBlock2D"`, `"DownBlock2D"`.
        mid_block_type (`str` or `None`, *optional*, defaults to `"UNetMidBlock2DCrossAttn"`):
            `"UNetMidBlock2DCrossAttn"`, or `None` for no mid block.
        up_block_types (`Sequence[str]`, *optional*, defaults to `"UpBlock2D"` then three `"CrossAttnUpBlock2D"`):
            diffusers block per resolution, one of `"CrossAttnUpBlock2D"`, `"UpBlock2D"`.
        block_out_channels (`Sequence[int]`, *optional*, defaults to `(320, 640, 1280, 1280)`):
            Width of each resolution level; every level but the last halves the spatial size.
        layers_per_block (`int`, *optional*, defaults to 2):
            Resnet (+ transformer) layers per down block; up blocks have one more.
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
    """

    # The signature's shared keys (SHARED_CONFIG_KEYS) are copied in DenoisingUNet3D.__init__:
    # keep names and defaults in sync (tests/model/test_model_unet_skeleton.py checks).
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
        heads, temb_dim = self._init_skeleton(in_channels, down_block_types, up_block_types, block_out_channels,
                                              num_attention_heads, norm_num_groups, flip_sin_to_cos, freq_shift)
        common = dict(temb_channels=temb_dim, resnet_eps=norm_eps, resnet_act_fn=act_fn,
                      resnet_groups=norm_num_groups, cross_attention_dim=cross_attention_dim,
                      use_linear_projection=use_linear_projection)

        for i, (kind, (cin, cout, add_downsample)) in enumerate(zip(down_block_types,
                                                                     down_channel_plan(block_out_channels))):
            if kind not in DOWN_2D:
                raise ConfigError(f"down_block_types: unsupported block {kind!r} (expected one of {DOWN_2D})")
            self.down_blocks.append(get_down_block(
                kind, num_layers=layers_per_block, in_channels=cin, out_channels=cout,
                add_downsample=add_downsample, num_attention_heads=heads[i],
                attention_head_dim=cout // heads[i], downsample_padding=downsample_padding, **common,
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

        up_heads = list(reversed(heads))
        for i, (kind, (cin, prev, cout, add_upsample)) in enumerate(zip(up_block_types,
                                                                         up_channel_plan(block_out_channels))):
            if kind not in UP_2D:
                raise ConfigError(f"up_block_types: unsupported block {kind!r} (expected one of {UP_2D})")
            self.up_blocks.append(get_up_block(
                kind, num_layers=layers_per_block + 1, in_channels=cin, out_channels=cout,
                prev_output_channel=prev, add_upsample=add_upsample, resolution_idx=i,
                num_attention_heads=up_heads[i], attention_head_dim=cout // up_heads[i], **common,
            ))
        use_single_key_cross_attention(self)

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        r"""
        Run the reference latent through the UNet (the pipeline calls it once per video, at timestep 0).

        Args:
            sample (`torch.Tensor` of shape `(B, in_channels, h, w)`):
                Reference latents; under classifier-free guidance the batch holds both halves.
            timestep (`torch.Tensor`, `int` or `float`): A scalar or one value per batch item, shape `(B,)`.
            encoder_hidden_states (`torch.Tensor` of shape `(B, tokens, cross_attention_dim)`):
                Cross-attention context (one CLIP image token in AnyCharV).

        Returns:
            `torch.Tensor` of shape `(B, block_out_channels[0], h, w)`: the last up block's output
            (unused by the pipeline; what it needs is captured during the call).
        """
        _, _, height, width = sample.shape
        emb = self._embed_time(timestep, sample)

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
        for block, block_skips, size in self._up_block_inputs(skips, height, width):
            if getattr(block, "has_cross_attention", False):
                x = block(x, block_skips, emb, encoder_hidden_states=encoder_hidden_states, upsample_size=size)
            else:
                x = block(x, block_skips, emb, upsample_size=size)
        return x
