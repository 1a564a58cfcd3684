"""The SD-1.5-size configs (``anycharv.model.sd15``) build the documented architecture. Built on the
meta device: structure and shapes only, no SD-size weights allocated."""

from __future__ import annotations

import pytest
import torch

from anycharv.model.sd15 import SD15_DENOISING_UNET, SD15_REFERENCE_UNET, build_sd15_components


@pytest.fixture(scope="module")
def sd15():
    return build_sd15_components("meta")


def test_configs_are_the_release_architecture():
    for config in (SD15_REFERENCE_UNET, SD15_DENOISING_UNET):
        assert list(config["block_out_channels"]) == [320, 640, 1280, 1280]
        assert config["num_attention_heads"] == 8 and config["cross_attention_dim"] == 768
    assert SD15_REFERENCE_UNET["in_channels"] == 4 and SD15_DENOISING_UNET["in_channels"] == 9
    assert SD15_DENOISING_UNET["down_block_types"][0] == "CrossAttnDownBlock3D"
    assert SD15_DENOISING_UNET["motion_attention_block_types"] == ["Temporal_Self", "Temporal_Self"]


def test_parameter_counts_match_the_module_docstring(sd15):
    millions = {name: round(sum(p.numel() for p in m.parameters()) / 1e6, 2) for name, m in sd15.items()}
    assert millions == {"reference_unet": 859.51, "denoising_unet": 1312.74, "pose_guider": 1.09,
                        "vae": 83.65, "image_encoder": 303.97}
    assert all(p.device.type == "meta" for m in sd15.values() for p in m.parameters())


def test_tensor_shapes_at_576x1024(sd15):
    frames, meta = 24, torch.device("meta")
    unet = sd15["denoising_unet"]
    assert tuple(unet.conv_in.weight.shape) == (320, 9, 3, 3) and tuple(unet.conv_out.weight.shape) == (4, 320, 3, 3)
    assert not hasattr(sd15["reference_unet"], "conv_out")
    assert sd15["vae"].config.latent_channels == 4 and 2 ** (len(sd15["vae"].config.block_out_channels) - 1) == 8
    assert sd15["image_encoder"].config.projection_dim == 768
    with torch.no_grad():
        pose = sd15["pose_guider"](torch.empty(1, 3, frames, 1024, 576, device=meta))
        context = torch.empty(1, 1, 768, device=meta)
        out = unet(torch.empty(1, 9, frames, 128, 72, device=meta), 999, context, pose)
        ref = sd15["reference_unet"](torch.empty(2, 4, 128, 72, device=meta), 0, context.repeat(2, 1, 1))
    assert tuple(pose.shape) == (1, 320, frames, 128, 72)
    assert tuple(out.shape) == (1, 4, frames, 128, 72)
    assert tuple(ref.shape) == (2, 320, 128, 72)
