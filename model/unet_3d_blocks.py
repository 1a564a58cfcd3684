"""Down / mid / up blocks of the video UNet on frame-folded tensors ((B*F, C, h, w), batch-major).

The 2D pieces are diffusers' own (``ResnetBlock2D``, ``Transformer2DModel``, ``Downsample2D``,
``Upsample2D``): folding frames into the batch makes their GroupNorms per-frame ("inflated") and
their convs per-frame, exactly like the official Inflated* layers. A motion module (or ``None``) sits
after each resnet/transformer pair; the mid block runs resnet -> transformer -> motion -> resnet.
"""

from __future__ import annotations

import torch
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.upsampling import Upsample2D
from torch import nn

from anycharv.model.motion_module import MotionModule


def _resnet(cin: int, cout: int, temb: int, eps: float, groups: int, act: str, scale: float = 1.0) -> ResnetBlock2D:
    return ResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=temb, eps=eps, groups=groups,
                         non_linearity=act, output_scale_factor=scale)


def _transformer(channels: int, heads: int, cross_dim: int, groups: int, linear: bool) -> Transformer2DModel:
    return Transformer2DModel(heads, channels // heads, in_channels=channels, num_layers=1,
                              cross_attention_dim=cross_dim, norm_num_groups=groups,
                              use_linear_projection=linear)


def _motion(channels: int, enabled: bool, kwargs: dict) -> MotionModule | None:
    return MotionModule(channels, **kwargs) if enabled else None


class _Block3D(nn.Module):
    """Shared per-layer step: resnet -> transformer (if any) -> motion module (if any)."""

    def __init__(self):
        super().__init__()
        self.gradient_checkpointing = False

    def _run(self, module, *args):
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)

    def _layer(self, index: int, x, temb, context, num_frames):
        x = self._run(self.resnets[index], x, temb)
        attentions = getattr(self, "attentions", None)
        if attentions is not None:
            x = self._run(lambda h, c: attentions[index](h, encoder_hidden_states=c, return_dict=False)[0],
                          x, context)
        motion = self.motion_modules[index]
        if motion is not None:
            x = self._run(motion, x, num_frames)
        return x


class DownBlock3D(_Block3D):
    has_cross_attention = False

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int, eps: float,
                 groups: int, act: str, add_downsample: bool, downsample_padding: int, use_motion: bool,
                 motion_kwargs: dict, heads: int | None = None, cross_attention_dim: int | None = None,
                 use_linear_projection: bool = False):
        super().__init__()
        self.resnets = nn.ModuleList(
            _resnet(in_channels if i == 0 else out_channels, out_channels, temb_channels, eps, groups, act)
            for i in range(num_layers)
        )
        if self.has_cross_attention:
            self.attentions = nn.ModuleList(
                _transformer(out_channels, heads, cross_attention_dim, groups, use_linear_projection)
                for _ in range(num_layers)
            )
        self.motion_modules = nn.ModuleList(_motion(out_channels, use_motion,
                                                    motion_kwargs) for _ in range(num_layers))
        self.downsamplers = (
            nn.ModuleList([Downsample2D(out_channels, use_conv=True, out_channels=out_channels,
                                        padding=downsample_padding, name="op")])
            if add_downsample else None
        )

    def forward(self, x, temb, context, num_frames):
        skips = ()
        for i in range(len(self.resnets)):
            x = self._layer(i, x, temb, context, num_frames)
            skips += (x,)
        if self.downsamplers is not None:
            for down in self.downsamplers:
                x = down(x)
            skips += (x,)
        return x, skips


class CrossAttnDownBlock3D(DownBlock3D):
    has_cross_attention = True


class UpBlock3D(_Block3D):
    has_cross_attention = False

    def __init__(self, in_channels: int, prev_output_channel: int, out_channels: int, temb_channels: int,
                 num_layers: int, eps: float, groups: int, act: str, add_upsample: bool, use_motion: bool,
                 motion_kwargs: dict, heads: int | None = None, cross_attention_dim: int | None = None,
                 use_linear_projection: bool = False):
        super().__init__()
        resnets = []
        for i in range(num_layers):
            skip = in_channels if i == num_layers - 1 else out_channels
            cin = prev_output_channel if i == 0 else out_channels
            resnets.append(_resnet(cin + skip, out_channels, temb_channels, eps, groups, act))
        self.resnets = nn.ModuleList(resnets)
        if self.has_cross_attention:
            self.attentions = nn.ModuleList(
                _transformer(out_channels, heads, cross_attention_dim, groups, use_linear_projection)
                for _ in range(num_layers)
            )
        self.motion_modules = nn.ModuleList(_motion(out_channels, use_motion,
                                                    motion_kwargs) for _ in range(num_layers))
        self.upsamplers = (
            nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
            if add_upsample else None
        )

    def forward(self, x, skips, temb, context, num_frames, upsample_size=None):
        for i in range(len(self.resnets)):
            x = torch.cat([x, skips[-1]], dim=1)
            skips = skips[:-1]
            x = self._layer(i, x, temb, context, num_frames)
        if self.upsamplers is not None:
            for up in self.upsamplers:
                x = up(x, upsample_size)
        return x


class CrossAttnUpBlock3D(UpBlock3D):
    has_cross_attention = True


class UNetMidBlock3DCrossAttn(_Block3D):
    has_cross_attention = True

    def __init__(self, channels: int, temb_channels: int, eps: float, groups: int, act: str,
                 output_scale_factor: float,
                 heads: int, cross_attention_dim: int, use_linear_projection: bool, use_motion: bool,
                 motion_kwargs: dict, num_layers: int = 1):
        super().__init__()
        self.resnets = nn.ModuleList(
            _resnet(channels, channels, temb_channels, eps, groups, act, output_scale_factor)
            for _ in range(num_layers + 1)
        )
        self.attentions = nn.ModuleList(
            _transformer(channels, heads, cross_attention_dim, groups,
                         use_linear_projection) for _ in range(num_layers)
        )
        self.motion_modules = nn.ModuleList(_motion(channels, use_motion, motion_kwargs) for _ in range(num_layers))

    def forward(self, x, temb, context, num_frames):
        x = self._run(self.resnets[0], x, temb)
        for attn, motion, resnet in zip(self.attentions, self.motion_modules, self.resnets[1:]):
            x = self._run(lambda h, c, a=attn: a(h, encoder_hidden_states=c, return_dict=False)[0], x, context)
            if motion is not None:
                x = self._run(motion, x, num_frames)
            x = self._run(resnet, x, temb)
        return x


DOWN_BLOCKS = {"DownBlock3D": DownBlock3D, "CrossAttnDownBlock3D": CrossAttnDownBlock3D}
UP_BLOCKS = {"UpBlock3D": UpBlock3D, "CrossAttnUpBlock3D": CrossAttnUpBlock3D}
