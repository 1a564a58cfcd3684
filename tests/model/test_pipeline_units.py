"""Pipeline building blocks against the official goldens: scheduler, windows, CLIP/VAE/mask/uint8."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler
from safetensors.torch import load_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from anycharv.errors import InputError
from anycharv.model.context_windows import (
    context_windows,
    coverage_counts,
    official_windows,
    sliding_windows,
)
from anycharv.model.encoders import auto_chunk_frames, clip_image_embeds, decode_latents, encode_frames
from anycharv.model.image_processing import (
    as_masks,
    as_rgb_frames,
    as_rgb_image,
    clip_pixel_values,
    masks_to_latent,
    video_to_uint8,
)
from anycharv.model.scheduling import SCHEDULER_CONFIG, make_scheduler

ATOL = 1e-4


@pytest.fixture(scope="module")
def golden(reference_dir):
    return load_file(str(reference_dir / "e2e_golden.safetensors"))


@pytest.fixture(scope="module")
def nocfg(reference_dir):
    return load_file(str(reference_dir / "e2e_nocfg_golden.safetensors"))


@pytest.fixture(scope="module")
def inputs(reference_dir):
    return {k: v.numpy() for k, v in load_file(str(reference_dir / "inputs_uint8.safetensors")).items()}


@pytest.fixture(scope="module")
def run(reference_dir):
    return json.loads((reference_dir / "configs" / "run.json").read_text())


@pytest.fixture(scope="module")
def vae(reference_dir):
    cfg = json.loads((reference_dir / "configs" / "vae.json").read_text())["constructor_kwargs"]
    model = AutoencoderKL(**cfg)
    model.load_state_dict(load_file(str(reference_dir / "weights" / "vae.safetensors")))
    return model.eval()


@pytest.fixture(scope="module")
def image_encoder(reference_dir):
    cfg = json.loads((reference_dir / "configs" / "image_encoder.json").read_text())["constructor_kwargs"]["config"]
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg))
    model.load_state_dict(load_file(str(reference_dir / "weights" / "image_encoder.safetensors")))
    return model.eval()


# ------------------------------------------------------------------------------------------ scheduler
def test_make_scheduler_matches_official_config_and_goldens(reference_dir, golden, nocfg, run):
    official = json.loads((reference_dir / "configs" / "scheduler.json").read_text())["resolved_config"]
    sched = make_scheduler()
    for key, value in official.items():
        assert sched.config[key] == value, key
    assert SCHEDULER_CONFIG["prediction_type"] == "v_prediction"
    # float32 cumprod rounds differently with the CPU's vector width (AVX2 vs AVX-512: up to 3e-7 here)
    torch.testing.assert_close(sched.alphas_cumprod, golden["alphas_cumprod"], rtol=1e-5, atol=1e-6)
    assert sched.alphas_cumprod[-1] == 0  # zero terminal SNR
    sched.set_timesteps(run["steps"])
    assert torch.equal(sched.timesteps, golden["timesteps"])
    for data in (golden, nocfg):
        for i, t in enumerate(sched.timesteps):
            out = sched.step(data[f"step{i}_model_output"], t, data[f"step{i}_latents_in"], eta=0.0).prev_sample
            torch.testing.assert_close(out, data[f"step{i}_latents_out"], rtol=0, atol=ATOL)


def test_make_scheduler_overrides_single_keys():
    sched = make_scheduler(timestep_spacing="leading")
    assert isinstance(sched, DDIMScheduler)
    assert sched.config.timestep_spacing == "leading" and sched.config.rescale_betas_zero_snr


# ------------------------------------------------------------------------------------------ windows
def test_official_windows_match_golden_schedule(reference_dir, run):
    info = json.loads((reference_dir / "generation_info.json").read_text())["e2e"]
    windows = official_windows(run["video_length"], run["context_frames"], run["context_overlap"],
                               run["context_stride"])
    assert windows == info["windows"]
    assert coverage_counts(windows, run["video_length"]) == info["counter"]


def test_official_windows_wrap_and_single_window():
    assert official_windows(12, 6, 2) == [[0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9], [8, 9, 10, 11, 0, 1]]
    assert official_windows(5, 6, 2) == [[0, 1, 2, 3, 4]]
    assert official_windows(6, 6, 2) == [[0, 1, 2, 3, 4, 5]]
    # default sizes: 48 frames, 24/6 -> starts 0, 18, 36 (the last wraps by 12 frames)
    w = official_windows(48, 24, 6)
    assert [x[0] for x in w] == [0, 18, 36] and w[-1][-1] == 11


@pytest.mark.parametrize("frames,size,overlap", [(12, 6, 2), (13, 6, 2), (100, 24, 6), (25, 24, 6), (7, 3, 0)])
def test_sliding_windows_cover_without_wrapping(frames, size, overlap):
    windows = sliding_windows(frames, size, overlap)
    counts = coverage_counts(windows, frames)
    assert min(counts) >= 1
    for w in windows:
        assert len(w) == size and w == list(range(w[0], w[0] + size))  # contiguous, never wraps
    starts = [w[0] for w in windows]
    assert starts[0] == 0 and windows[-1][-1] == frames - 1
    assert all(b - a <= size - overlap for a, b in zip(starts, starts[1:]))


def test_context_windows_rejects_bad_settings():
    with pytest.raises(InputError, match="context_overlap"):
        context_windows("official", 12, 6, 6)
    with pytest.raises(InputError, match="context_schedule"):
        context_windows("circular", 12, 6, 2)
    with pytest.raises(InputError, match="video_length"):
        context_windows("sliding", 0, 6, 2)


# ------------------------------------------------------------------------------------------ CLIP
def test_clip_pixel_values_and_embeds_match_golden(inputs, golden, image_encoder):
    ref = as_rgb_image(PIL.Image.fromarray(inputs["ref_image"], mode="RGB"))
    pixels = clip_pixel_values(ref, CLIPImageProcessor())
    torch.testing.assert_close(pixels, golden["clip_pixel_values"], rtol=0, atol=ATOL)
    embeds = clip_image_embeds(image_encoder, pixels)
    assert embeds.shape == (1, 1, golden["image_embeds"].shape[-1])
    torch.testing.assert_close(embeds[:, 0], golden["image_embeds"], rtol=0, atol=ATOL)


# ------------------------------------------------------------------------------------------ VAE
def test_vae_encode_reference_and_target_match_golden(inputs, golden, vae):
    ref = encode_frames(vae, inputs["ref_image"][None], chunk_size=1)[:, :, 0]
    torch.testing.assert_close(ref, golden["ref_image_latents"], rtol=0, atol=ATOL)
    tgt = encode_frames(vae, inputs["tgt_frames"], chunk_size=5)
    torch.testing.assert_close(tgt, golden["tgt_latents"], rtol=0, atol=ATOL)


def test_vae_chunking_bounds_batch_and_keeps_values(inputs, golden, vae):
    seen = []
    handle = vae.decoder.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    try:
        video = decode_latents(vae, golden["final_latents"], chunk_size=5)
        one = decode_latents(vae, golden["final_latents"], chunk_size=1)
    finally:
        handle.remove()
    frames = golden["final_latents"].shape[2]
    assert max(seen) <= 5 and sum(seen) == 2 * frames
    torch.testing.assert_close(video, golden["video"], rtol=0, atol=5e-4)
    torch.testing.assert_close(video, one, rtol=0, atol=1e-5)
    a = encode_frames(vae, inputs["tgt_frames"], chunk_size=1)
    b = encode_frames(vae, inputs["tgt_frames"], chunk_size=len(inputs["tgt_frames"]))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_auto_chunk_frames_bounds_cpu_pixels_and_keeps_accelerators_at_eight():
    cpu = torch.device("cpu")
    assert auto_chunk_frames(cpu, 128, 128) == 4
    assert auto_chunk_frames(cpu, 64, 64) == 16
    assert auto_chunk_frames(cpu, 256, 256) == 1 and auto_chunk_frames(cpu, 1024, 576) == 1
    assert auto_chunk_frames(torch.device("meta"), 1024, 576) == 8  # any non-CPU device


def test_uint8_truncation_matches_official_video(reference_dir, golden):
    ref_u8 = load_file(str(reference_dir / "e2e_video_uint8.safetensors"))["video_uint8"]
    mine = video_to_uint8(golden["video"][0].permute(1, 2, 3, 0), "truncate")
    assert torch.equal(mine, ref_u8)  # the same float video truncates to exactly the official bytes
    rounded = video_to_uint8(golden["video"][0].permute(1, 2, 3, 0), "round")
    diff = rounded.int() - ref_u8.int()
    assert diff.min() >= 0 and diff.max() <= 1 and diff.float().mean() > 0.3


# ------------------------------------------------------------------------------------------ masks
def test_mask_nearest_matches_golden_and_area_is_coverage(inputs, golden):
    masks = as_masks([PIL.Image.fromarray(m, mode="L") for m in inputs["tgt_masks"]])
    h, w = golden["tgt_mask_latent"].shape[-2:]
    nearest = masks_to_latent(masks, h, w, "nearest")
    torch.testing.assert_close(nearest, golden["tgt_mask_latent"], rtol=0, atol=0)
    area = masks_to_latent(masks, h, w, "area")
    fy, fx = masks.shape[1] // h, masks.shape[2] // w
    cells = masks.astype(np.float64).reshape(len(masks), h, fy, w, fx).mean(axis=(2, 4)) / 255
    np.testing.assert_allclose(area[0, 0].numpy(), cells, atol=1e-6)


def test_mask_nearest_loses_a_thin_box_area_keeps_it():
    m = np.zeros((1, 32, 32), np.uint8)
    m[0, 9:15, 9:15] = 255  # inside latent cells (1,1) but misses every sampled pixel (8i, 8j)
    assert masks_to_latent(m, 4, 4, "nearest").max() == 0
    area = masks_to_latent(m, 4, 4, "area")
    assert area[0, 0, 0, 1, 1] == pytest.approx(36 / 64)


# ------------------------------------------------------------------------------------------ inputs
def test_input_conversion_and_errors():
    rgb = np.zeros((16, 8, 3), np.uint8)
    assert as_rgb_frames([rgb, PIL.Image.fromarray(rgb)], "target_frames").shape == (2, 16, 8, 3)
    assert as_masks(np.ones((3, 16, 8), bool)).max() == 255
    with pytest.raises(InputError, match="reference_image.*mode 'RGBA'"):
        as_rgb_image(PIL.Image.new("RGBA", (8, 16)))
    with pytest.raises(InputError, match=r"masks\[1\].*got 'RGB'"):
        as_masks([PIL.Image.new("L", (8, 16)), PIL.Image.new("RGB", (8, 16))])
    with pytest.raises(InputError, match="pose_frames: no frames"):
        as_rgb_frames([], "pose_frames")
    with pytest.raises(InputError, match="target_frames.*differ in size"):
        as_rgb_frames([rgb, np.zeros((8, 8, 3), np.uint8)], "target_frames")
    with pytest.raises(InputError, match=r"target_frames\[0\].*uint8"):
        as_rgb_frames([rgb.astype(np.float32)], "target_frames")
    with pytest.raises(InputError, match="reference_image.*empty"):
        as_rgb_image(np.zeros((0, 8, 3), np.uint8))
