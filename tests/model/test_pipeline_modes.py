"""AnyCharVPipeline behaviour beyond parity: options, output types, callbacks, save/load, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from anycharv.errors import InputError
from anycharv.model.context_windows import context_windows
from anycharv.model.official import load_official_components
from anycharv.model.pipeline import DEFAULT_OPTIONS, PARITY_OPTIONS, AnyCharVPipeline, InferenceOptions


@pytest.fixture(scope="module")
def pipe(golden_pipe):
    return golden_pipe


@pytest.fixture(scope="module")
def clip(reference_dir):
    """(reference, target, pose, masks) as uint8 arrays; all frames of the fixture."""
    inp = {k: v.numpy() for k, v in load_file(str(reference_dir / "inputs_uint8.safetensors")).items()}
    return inp["ref_image"], inp["tgt_frames"], inp["pose_frames"], inp["tgt_masks"]


def _short(clip, frames=3):
    ref, tgt, pose, masks = clip
    return ref, tgt[:frames], pose[:frames], masks[:frames]


def _latents(pipe, clip, **kwargs):
    kwargs.setdefault("num_inference_steps", 1)
    kwargs.setdefault("guidance_scale", 1.0)
    kwargs.setdefault("context_frames", 6)
    kwargs.setdefault("context_overlap", 2)
    return pipe(*clip, generator=torch.manual_seed(7), output_type="latent", **kwargs).frames


class UNetCalls:
    def __init__(self, unet):
        self.outputs, self.samples = [], []
        self.handle = unet.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, out):
        self.samples.append((args[0] if args else kwargs["sample"]).clone())
        self.outputs.append(out.clone())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_default_mode_differs_from_parity_only_by_documented_options(pipe, clip):
    # 6 frames in windows of 4 overlapping by 2: the official schedule wraps ([4, 5, 0, 1]), sliding does not
    clip = _short(clip, 6)
    windows = dict(context_frames=4, context_overlap=2)
    parity = _latents(pipe, clip, parity=True, **windows)
    as_parity = {f.name: getattr(PARITY_OPTIONS, f.name) for f in dataclasses.fields(InferenceOptions)}
    as_parity.update(windows)
    same = _latents(pipe, clip, parity=False, **as_parity)
    assert torch.equal(same, parity), "default mode with every option at its parity value must equal parity"
    flips = {"context_schedule": "sliding", "window_average": "always", "mask_resize": "area",
             "reference_bank_dtype": "model"}
    for name, value in flips.items():
        other = _latents(pipe, clip, **{**as_parity, name: value})
        assert (other - parity).abs().max() > 1e-7, f"{name}={value} should change the result"
    # the fixture VAE's own scaling factor is SD's 0.18215: reading it from the config changes nothing
    assert pipe.vae.config.scaling_factor == pytest.approx(0.18215)
    assert torch.equal(_latents(pipe, clip, **{**as_parity, "latent_scale": "vae"}), parity)
    default = _latents(pipe, clip, **windows)
    assert torch.isfinite(default).all() and (default - parity).abs().max() > 1e-4
    assert pipe.resolve_options() == DEFAULT_OPTIONS and pipe.resolve_options(mode="parity") == PARITY_OPTIONS


@pytest.mark.parametrize("average", ["cfg_only", "always"])
def test_window_merge_without_cfg(pipe, clip, average):
    frames = clip[1].shape[0]
    windows = context_windows("sliding", frames, 6, 2)
    seen = {}

    def grab(p, i, t, tensors):
        seen.update(tensors)
        return {}

    with UNetCalls(pipe.denoising_unet) as calls:
        pipe(*clip, num_inference_steps=1, guidance_scale=1.0, context_frames=6, context_overlap=2,
             context_schedule="sliding", window_average=average, generator=torch.manual_seed(0),
             output_type="latent", callback_on_step_end=grab, callback_on_step_end_tensor_inputs=["noise_pred"])
    total = torch.zeros_like(seen["noise_pred"])
    count = torch.zeros(frames)
    for out, window in zip(calls.outputs, windows):
        total[:, :, window] += out
        count[window] += 1
    assert count.max() > 1  # the clip really has overlapping frames
    expected = total / count.view(1, 1, -1, 1, 1) if average == "always" else total
    torch.testing.assert_close(seen["noise_pred"], expected, rtol=0, atol=1e-6)


def test_default_banks_keep_model_dtype_parity_rounds_to_fp16(pipe, clip):
    dtypes = []

    def hook(module, args):
        for m in module.modules():
            bank = getattr(getattr(getattr(m, "attn1", None), "processor", None), "bank", None)
            if isinstance(bank, torch.Tensor):
                dtypes.append(bank.dtype)

    handle = pipe.denoising_unet.register_forward_pre_hook(hook)
    try:
        _latents(pipe, _short(clip))
        default_dtypes = set(dtypes)
        dtypes.clear()
        _latents(pipe, _short(clip), parity=True)
    finally:
        handle.remove()
    assert default_dtypes == {torch.float32} and set(dtypes) == {torch.float16}


def test_output_types_are_consistent(pipe, clip):
    short = _short(clip)
    kwargs = dict(num_inference_steps=1, guidance_scale=2.0, decode_chunk_size=2)
    out = {t: pipe(*short, generator=torch.manual_seed(3), output_type=t, **kwargs).frames
           for t in ("latent", "np", "pt", "uint8", "pil")}
    frames, height, width = short[1].shape[:3]
    assert out["latent"].shape == (1, 4, frames, height // 8, width // 8)
    assert out["np"].shape == (1, frames, height, width, 3) and out["np"].dtype == np.float32
    assert 0 <= out["np"].min() and out["np"].max() <= 1
    assert out["pt"].shape == (1, frames, 3, height, width)
    np.testing.assert_array_equal(out["pt"].permute(0, 1, 3, 4, 2).numpy(), out["np"])
    assert out["uint8"].dtype == np.uint8
    np.testing.assert_array_equal(out["uint8"], np.round(out["np"] * 255).astype(np.uint8))  # default: rounding
    assert len(out["pil"]) == 1 and len(out["pil"][0]) == frames
    np.testing.assert_array_equal(np.stack([np.asarray(im) for im in out["pil"][0]]), out["uint8"][0])
    decoded = pipe.postprocess(out["latent"], "np", decode_chunk_size=1)
    np.testing.assert_allclose(decoded, out["np"], atol=1e-5)
    as_tuple = pipe(*short, generator=torch.manual_seed(3), output_type="latent", return_dict=False, **kwargs)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out["latent"])


def test_callback_on_step_end_runs_each_step_and_can_replace_latents(pipe, clip):
    short = _short(clip)
    steps = 3
    record = []

    def callback(p, i, t, tensors):
        record.append((i, int(t), sorted(tensors)))
        if i == 0:
            return {"latents": torch.zeros_like(tensors["latents"])}
        if i == steps - 1:
            return {"latents": torch.full_like(tensors["latents"], 0.25)}
        return {}

    with UNetCalls(pipe.denoising_unet) as calls:
        result = pipe(*short, num_inference_steps=steps, guidance_scale=1.0, generator=torch.manual_seed(1),
                      output_type="latent", callback_on_step_end=callback,
                      callback_on_step_end_tensor_inputs=["latents", "noise_pred"]).frames
    pipe.scheduler.set_timesteps(steps)
    assert record == [(i, int(t), ["latents", "noise_pred"]) for i, t in enumerate(pipe.scheduler.timesteps)]
    assert torch.count_nonzero(calls.samples[0][:, :4]) > 0
    assert torch.count_nonzero(calls.samples[1][:, :4]) == 0  # step 1 saw the replaced latents
    assert torch.equal(result, torch.full_like(result, 0.25))


def test_save_pretrained_round_trip_gives_identical_latents(reference_dir, clip, tmp_path):
    src = AnyCharVPipeline.from_components(load_official_components(reference_dir), parity=True)
    src.set_progress_bar_config(disable=True)
    short = _short(clip, 4)
    before = _latents(src, short, guidance_scale=3.0, num_inference_steps=2)
    src.save_pretrained(tmp_path)
    loaded = AnyCharVPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.parity is True
    for name in ("vae", "image_encoder", "reference_unet", "denoising_unet", "pose_guider", "scheduler",
                 "feature_extractor"):
        assert type(getattr(loaded, name)) is type(getattr(src, name)), name
    after = _latents(loaded, short, guidance_scale=3.0, num_inference_steps=2)
    assert torch.equal(before, after)


def test_same_seed_same_result_and_given_latents(pipe, clip):
    short = _short(clip)
    a = _latents(pipe, short)
    assert torch.equal(a, _latents(pipe, short))
    noise = torch.randn(1, 4, 3, short[1].shape[1] // 8, short[1].shape[2] // 8, generator=torch.manual_seed(7))
    assert torch.equal(a, pipe(*short, num_inference_steps=1, guidance_scale=1.0, latents=noise,
                               output_type="latent").frames)


def test_bad_inputs_raise_input_error_naming_the_input(pipe, clip):
    ref, tgt, pose, masks = _short(clip)
    run = dict(num_inference_steps=1, output_type="latent")
    cases = [
        ((ref, tgt, pose[:2], masks), {}, "pose_frames.*frame counts disagree"),
        ((ref, tgt, pose, masks[:2]), {}, "masks.*frame counts disagree"),
        ((ref, tgt, pose, masks), {"height": 92}, "height.*multiple of 8"),
        ((ref, tgt[:, :, :60], pose[:, :, :60], masks[:, :, :60]), {}, "width.*multiple of 8"),
        ((ref, [], pose, masks), {}, "target_frames: no frames"),
        ((PIL.Image.fromarray(ref).convert("RGBA"), tgt, pose, masks), {}, "reference_image.*RGBA"),
        ((ref, tgt, pose, [PIL.Image.fromarray(m).convert("RGB") for m in masks]), {}, r"masks\[0\]"),
        ((ref, tgt, pose, masks), {"output_type": "gif"}, "output_type"),
        ((ref, tgt, pose, masks), {"parity": True, "mask_resize": "area"}, "mask_resize.*parity"),
        ((ref, tgt, pose, masks), {"mode": "fast"}, "mode"),
        ((ref, tgt, pose, masks), {"callback_on_step_end_tensor_inputs": ["pose_fea"]},
         "callback_on_step_end_tensor_inputs"),
        ((ref, tgt, pose, masks), {"latents": torch.zeros(1, 4, 2, 12, 8)}, "latents.*shape"),
        ((ref, tgt, pose, masks), {"context_overlap": 30}, "context_overlap"),
        ((ref, tgt, pose, masks), {"window_average": "median"}, "window_average"),
    ]
    for args, extra, pattern in cases:
        with pytest.raises(InputError, match=pattern):
            pipe(*args, **{**run, **extra})


@pytest.mark.gpu
def test_half_precision_on_gpu_tracks_fp32(reference_dir, clip):
    from anycharv.devices import pick_device, pick_dtype

    device = pick_device()
    short = _short(clip, 4)
    ref32 = AnyCharVPipeline.from_components(load_official_components(reference_dir), parity=True)
    ref32.set_progress_bar_config(disable=True)
    expected = _latents(ref32, short, guidance_scale=3.0, num_inference_steps=2)
    dtype = pick_dtype(device)
    half = AnyCharVPipeline.from_components(load_official_components(reference_dir, torch_dtype=dtype), parity=True)
    half.set_progress_bar_config(disable=True)
    half.to(device)
    got = _latents(half, short, guidance_scale=3.0, num_inference_steps=2)
    assert got.device.type == device.type and got.dtype == torch.float32
    assert (got.cpu() - expected).abs().max() < 0.1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_components_run_with_float32_latents(pipe, reference_dir, clip, dtype):
    """The GPU dtype paths (networks in bf16/fp16, latents and merging in fp32), exercised on the CPU."""
    short = _short(clip)
    ref32 = _latents(pipe, short, guidance_scale=3.0, num_inference_steps=2, parity=True)
    half = AnyCharVPipeline.from_components(load_official_components(reference_dir, torch_dtype=dtype))
    half.set_progress_bar_config(disable=True)
    for parity in (True, False):
        got = _latents(half, short, guidance_scale=3.0, num_inference_steps=2, parity=parity)
        assert got.dtype == torch.float32 and torch.isfinite(got).all()
        if parity:
            assert (got - ref32).abs().max() < 0.25  # half-precision drift only, same computation
    frames = half(*short, num_inference_steps=1, generator=torch.manual_seed(0), output_type="uint8").frames
    assert frames.dtype == np.uint8 and frames.shape == (1, *short[1].shape)


def test_enable_compile_keeps_results(reference_dir, clip):
    p = AnyCharVPipeline.from_components(load_official_components(reference_dir))
    p.set_progress_bar_config(disable=True)
    short = _short(clip)
    eager = _latents(p, short, guidance_scale=3.0)
    p.enable_compile(backend="eager")  # dynamo tracing with reference hooks installed; no C compiler needed
    assert p.denoising_unet._compiled_call_impl is not None
    torch.testing.assert_close(_latents(p, short, guidance_scale=3.0), eager, rtol=0, atol=1e-5)
