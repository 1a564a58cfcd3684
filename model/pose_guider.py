"""Pose guider: a small per-frame conv net from the rendered pose image to UNet-width features.

conv_in -> SiLU -> for each consecutive width pair (same-width conv -> SiLU -> stride-2 conv -> SiLU)
-> zero-initialised conv_out. Three stride-2 steps (four widths) give the VAE's factor 8, so the
output can be added to the denoising UNet's ``conv_in`` output. Names match the official checkpoint.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from anycharv.model.unet_common import fold_frames, unfold_frames


class PoseGuider(ModelMixin, ConfigMixin):
    r"""
    Pose guider: rendered pose images to features the denoising UNet adds to its ``conv_in`` output.

    Runs per frame (frames folded into the batch), so any number of frames and chunked calls give the
    same result. ``conv_out`` starts at zero, so a new guider leaves the UNet's output unchanged.

    Args:
        conditioning_embedding_channels (`int`, *optional*, defaults to 320):
            Output channels; must equal the denoising UNet's `block_out_channels[0]`.
        conditioning_channels (`int`, *optional*, defaults to 3): Channels of the pose render (RGB).
        block_out_channels (`Sequence[int]`, *optional*, defaults to `(16, 32, 96, 256)`):
            Widths of the conv stages; each step between two widths halves the size, so four widths
            give the VAE's factor 8.
    """

    @register_to_config
    def __init__(
        self,
        conditioning_embedding_channels: int = 320,
        conditioning_channels: int = 3,
        block_out_channels: Sequence[int] = (16, 32, 96, 256),
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, block_out_channels[0], kernel_size=3, padding=1)
        blocks = []
        for cin, cout in zip(block_out_channels[:-1], block_out_channels[1:]):
            blocks.append(nn.Conv2d(cin, cin, kernel_size=3, padding=1))
            blocks.append(nn.Conv2d(cin, cout, kernel_size=3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(block_out_channels[-1], conditioning_embedding_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # starts as "no pose": the UNet is unchanged at init
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        r"""
        Args:
            pose (`torch.Tensor` of shape `(B, conditioning_channels, F, H, W)` or `(B, conditioning_channels, H, W)`):
                Pose renders with values in [0, 1], at image size (H and W multiples of 8).

        Returns:
            `torch.Tensor` of shape `(B, conditioning_embedding_channels, F, H / 8, W / 8)` (4D for a 4D
            input): the factor is `2 ** (len(block_out_channels) - 1)`, 8 for four widths.
        """
        frames = pose.shape[2] if pose.ndim == 5 else None
        x = fold_frames(pose) if frames is not None else pose
        x = F.silu(self.conv_in(x))
        for conv in self.blocks:
            x = F.silu(conv(x))
        x = self.conv_out(x)
        return unfold_frames(x, frames) if frames is not None else x
