"""SD-1.5-size configs: the released AnyCharV architecture, for benchmarks and size checks.

The three AnyCharV networks take the release configs of ``official_configs`` (SD-1.5 UNet widths
320/640/1280/1280, 8 heads, AnimateDiff motion modules, the 9-channel ``conv_in``); the VAE is
``sd-vae-ft-mse``'s and the image encoder the CLIP ViT-L/14 vision tower of
``sd-image-variations-diffusers`` (768-d projection). With these, random weights cost what the real
model costs in time and memory, without downloading it. ``tiny.py`` is the small counterpart.

Sizes (million parameters): ReferenceNet 859.51 (SD-1.5's UNet without its output head), denoising
UNet 1312.74 (with motion modules), pose guider 1.09, VAE 83.65, image encoder 303.97. At 576x1024
(W x H) a window of F frames is a (1, 9, F, 128, 72) UNet input; the pose guider turns (1, 3, F, 1024,
576) renders into (1, 320, F, 128, 72) features.
"""

from __future__ import annotations

from typing import Any

from anycharv.model.official_configs import (
    RELEASE_MOTION,
    RELEASE_POSE_GUIDER,
    RELEASE_UNET_2D,
    denoising_unet_config,
    pose_guider_config,
    reference_unet_config,
)

SD15_REFERENCE_UNET: dict[str, Any] = reference_unet_config(dict(RELEASE_UNET_2D), "SD15_REFERENCE_UNET")
SD15_DENOISING_UNET: dict[str, Any] = denoising_unet_config({**RELEASE_UNET_2D, **RELEASE_MOTION, "in_channels": 9},
                                                            "SD15_DENOISING_UNET")
SD15_POSE_GUIDER: dict[str, Any] = pose_guider_config(dict(RELEASE_POSE_GUIDER), "SD15_POSE_GUIDER")
SD15_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215,
)
SD15_IMAGE_ENCODER: dict[str, Any] = dict(
    hidden_size=1024, intermediate_size=4096, projection_dim=768, num_hidden_layers=24, num_attention_heads=16,
    num_channels=3, image_size=224, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)


def build_sd15_components(device="cpu", dtype=None, seed: int = 0) -> dict:
    """{"reference_unet", "denoising_unet", "pose_guider", "vae", "image_encoder"} with random weights,
    in eval mode, created directly on ``device`` so no multi-GB CPU copy is made first
    (``"meta"`` builds the structure only). Seeds torch's global generators with ``seed``."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from anycharv.model.denoising_unet import DenoisingUNet3D
    from anycharv.model.pose_guider import PoseGuider
    from anycharv.model.reference_unet import ReferenceUNet2D

    torch.manual_seed(seed)
    with torch.device(device):
        components = {
            "reference_unet": ReferenceUNet2D(**SD15_REFERENCE_UNET),
            "denoising_unet": DenoisingUNet3D(**SD15_DENOISING_UNET),
            "pose_guider": PoseGuider(**SD15_POSE_GUIDER),
            "vae": AutoencoderKL(**SD15_VAE),
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(**SD15_IMAGE_ENCODER)),
        }
    if dtype is not None:
        components = {name: model.to(dtype=dtype) for name, model in components.items()}
    return {name: model.eval() for name, model in components.items()}
