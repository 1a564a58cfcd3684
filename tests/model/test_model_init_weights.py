"""Training starts from SD UNet2D and AnimateDiff weights (tiny random stand-ins made here)."""

from __future__ import annotations

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

from anycharv.errors import WeightsError
from anycharv.model.init_weights import (
    denoising_unet_from_unet2d,
    load_motion_module,
    reference_unet_from_unet2d,
    widen_conv_in,
)
from anycharv.model.single_key_attention import use_single_key_cross_attention

WIDTHS = (32, 32, 64)


@pytest.fixture(scope="module")
def sd_unet(tmp_path_factory):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=None, in_channels=4, out_channels=4, block_out_channels=WIDTHS, layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=32,
    ).eval()
    folder = tmp_path_factory.mktemp("sd") / "pipeline"
    unet.save_pretrained(str(folder / "unet"))  # pipeline-style folder with unet/
    return unet, folder


@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory):
    torch.manual_seed(1)
    adapter = MotionAdapter(block_out_channels=WIDTHS, motion_layers_per_block=1, motion_num_attention_heads=8,
                            motion_norm_num_groups=32, motion_max_seq_length=24, use_motion_mid_block=True,
                            motion_mid_block_layers_per_block=1)
    folder = tmp_path_factory.mktemp("adapter") / "motion_adapter"
    adapter.save_pretrained(str(folder))
    return adapter, folder


def _inputs(frames=3):
    g = torch.Generator().manual_seed(5)
    return torch.randn(2, 4, frames, 12, 8, generator=g), torch.randn(2, 1, 32, generator=g)


def test_widen_conv_in_zero_channels():
    weight = torch.randn(8, 4, 3, 3)
    wide = widen_conv_in(weight, 9)
    assert wide.shape == (8, 9, 3, 3)
    assert torch.equal(wide[:, :4], weight) and not wide[:, 4:].any()
    with pytest.raises(WeightsError, match="conv_in"):
        widen_conv_in(weight, 3)


def test_denoising_unet_equals_sd_unet_per_frame_when_new_channels_are_zero(sd_unet):
    unet, folder = sd_unet
    model = denoising_unet_from_unet2d(folder).eval()  # no motion module: fresh identity modules
    assert model.conv_in.weight.shape[1] == 9 and not model.conv_in.weight[:, 4:].any()
    latents, context = _inputs()
    extra = torch.randn(2, 5, latents.shape[2], 12, 8)
    with torch.no_grad():
        out = model(torch.cat([latents, torch.zeros_like(extra)], 1), 400, context)
        out_with_extra = model(torch.cat([latents, extra], 1), 400, context)
        for f in range(latents.shape[2]):
            expected = unet(latents[:, :, f], 400, context).sample
            torch.testing.assert_close(out[:, :, f], expected, atol=1e-5, rtol=0)
    # at init the extra channels have no effect at all
    torch.testing.assert_close(out_with_extra, out, atol=1e-5, rtol=0)


def test_reference_unet_equals_sd_unet_last_up_block(sd_unet):
    unet, folder = sd_unet
    model = reference_unet_from_unet2d(folder / "unet").eval()
    assert not hasattr(model, "conv_out")
    latents, context = _inputs()
    captured = []
    hook = unet.up_blocks[-1].register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        with torch.no_grad():
            unet(latents[:, :, 0], 0, context)
            use_single_key_cross_attention(unet)  # our UNets' cross-attention processor, for a bit-exact check
            unet(latents[:, :, 0], 0, context)
            ours = model(latents[:, :, 0], 0, context)
    finally:
        hook.remove()
        unet.set_attn_processor(AttnProcessor2_0())
    assert torch.equal(ours, captured[1])  # the same network and weights
    torch.testing.assert_close(ours, captured[0], rtol=0, atol=1e-5)  # against diffusers' SDPA: rounding only


def test_motion_adapter_folder_and_animatediff_ckpt_give_the_same_network(sd_unet, adapter_folder, tmp_path):
    _, folder = sd_unet
    adapter, adapter_path = adapter_folder
    from_adapter = denoising_unet_from_unet2d(folder, motion_module=adapter_path).eval()
    assert from_adapter.config.motion_temporal_position_encoding_max_len == 24  # follows the checkpoint
    theirs = adapter.state_dict()
    ours = from_adapter.state_dict()
    mm = "down_blocks.1.motion_modules.0"
    pairs = {
        f"{mm}.norm.weight": f"{mm}.temporal_transformer.norm.weight",
        f"{mm}.transformer_blocks.0.attn1.to_q.weight":
            f"{mm}.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight",
        f"{mm}.transformer_blocks.0.attn2.to_out.0.bias":
            f"{mm}.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_out.0.bias",
        f"{mm}.transformer_blocks.0.norm2.weight": f"{mm}.temporal_transformer.transformer_blocks.0.norms.1.weight",
        f"{mm}.transformer_blocks.0.norm3.bias": f"{mm}.temporal_transformer.transformer_blocks.0.ff_norm.bias",
        f"{mm}.proj_out.weight": f"{mm}.temporal_transformer.proj_out.weight",
        "mid_block.motion_modules.0.transformer_blocks.0.pos_embed.pe":
            "mid_block.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe",
    }
    for adapter_key, our_key in pairs.items():
        assert torch.equal(theirs[adapter_key], ours[our_key]), our_key

    # the same weights as an original AnimateDiff .ckpt (read with weights_only=True)
    ckpt = tmp_path / "mm_tiny.ckpt"
    torch.save({"state_dict": {k: v for k, v in ours.items() if ".motion_modules." in k}}, ckpt)
    assert set(load_motion_module(ckpt)) == {k for k in ours if ".motion_modules." in k}
    from_ckpt = denoising_unet_from_unet2d(folder, motion_module=ckpt).eval()
    latents, context = _inputs()
    sample = torch.cat([latents, torch.zeros(2, 5, *latents.shape[2:])], 1)
    with torch.no_grad():
        assert torch.equal(from_ckpt(sample, 10, context), from_adapter(sample, 10, context))


def test_incomplete_or_foreign_motion_weights_are_named(sd_unet, adapter_folder, tmp_path):
    _, folder = sd_unet
    _, adapter_path = adapter_folder
    state = load_motion_module(adapter_path)
    dropped = sorted(k for k in state if k.startswith("up_blocks.0."))[0]
    del state[dropped]
    partial = tmp_path / "partial.safetensors"
    from safetensors.torch import save_file

    save_file(state, str(partial))
    with pytest.raises(WeightsError, match="missing motion-module") as err:
        denoising_unet_from_unet2d(folder, motion_module=partial)
    assert dropped in str(err.value)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"conv_in.weight": torch.zeros(1)}, str(foreign))
    with pytest.raises(WeightsError, match="conv_in.weight"):
        load_motion_module(foreign)


def test_missing_unet_source_is_an_error(tmp_path):
    with pytest.raises(WeightsError, match="no such"):
        denoising_unet_from_unet2d(tmp_path / "nothing")
