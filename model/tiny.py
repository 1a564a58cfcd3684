"""Random tiny components with the architecture of golden set A (for ``--preset tiny`` and tests).

Seeded and deterministic. Tensors that constructors leave trivial (zero-initialised motion-module
``proj_out`` / pose-guider ``conv_out``, all-zero biases, all-ones norm scales) are re-randomised
so every part of the network affects the output, as in the golden sets.
"""

from __future__ import annotations

import torch
from torch import nn

from anycharv.model.denoising_unet import DenoisingUNet3D
from anycharv.model.pose_guider import PoseGuider
from anycharv.model.reference_unet import ReferenceUNet2D

_UNET_COMMON = dict(
    block_out_channels=(32, 32, 64), layers_per_block=1, norm_num_groups=32, norm_eps=1e-5,
    cross_attention_dim=32, num_attention_heads=2,
)
TINY_REFERENCE_UNET = dict(
    in_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    **_UNET_COMMON,
)
TINY_DENOISING_UNET = dict(
    in_channels=9, out_channels=4,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    motion_num_attention_heads=8, motion_temporal_position_encoding_max_len=32,
    **_UNET_COMMON,
)
TINY_POSE_GUIDER = dict(conditioning_embedding_channels=32, conditioning_channels=3, block_out_channels=(8, 16,
                                                                                                         32, 32))
TINY_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
    act_fn="silu", latent_channels=4, norm_num_groups=8, sample_size=64, scaling_factor=0.18215,
)
TINY_IMAGE_ENCODER = dict(
    hidden_size=32, intermediate_size=64, projection_dim=32, num_hidden_layers=2, num_attention_heads=2,
    num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)


def _derandomise_trivial(model: nn.Module, generator: torch.Generator) -> None:
    """Give zero tensors and all-ones norm scales small random values (deterministic)."""
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if torch.all(param == 0):
                fan_in = param[0].numel() if param.ndim > 1 else param.numel()
                scale = fan_in**-0.5 if param.ndim > 1 else 0.05
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
            elif param.ndim == 1 and torch.all(param == 1):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=generator))


def build_tiny_components(seed: int = 0, with_vae: bool = True, with_image_encoder: bool = True,
                          keep_zero_init: bool = False) -> dict[str, nn.Module]:
    """{"reference_unet", "denoising_unet", "pose_guider", "vae", "image_encoder"} in eval mode.
    ``keep_zero_init``: leave the constructors' zero outputs (pose guider, motion modules) as a
    training start has them, instead of randomising them as the golden sets do."""
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        components: dict[str, nn.Module] = {}
        if with_vae:
            components["vae"] = AutoencoderKL(**TINY_VAE)
        components["reference_unet"] = ReferenceUNet2D(**TINY_REFERENCE_UNET)
        components["denoising_unet"] = DenoisingUNet3D(**TINY_DENOISING_UNET)
        components["pose_guider"] = PoseGuider(**TINY_POSE_GUIDER)
        if with_image_encoder:
            components["image_encoder"] = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_IMAGE_ENCODER))
    finally:
        torch.random.set_rng_state(state)
    if not keep_zero_init:
        generator = torch.Generator().manual_seed(seed + 1)
        for name in ("reference_unet", "denoising_unet", "pose_guider"):
            _derandomise_trivial(components[name], generator)
    return {name: model.eval() for name, model in components.items()}
