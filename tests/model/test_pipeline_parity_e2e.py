"""End-to-end parity of AnyCharVPipeline(parity=True) with the official long-video pipeline.

Every tensor of the golden files is compared with what the pipeline really computed, captured with
forward hooks on the networks and a recording wrapper around the scheduler's ``step`` (no test-only
code paths in the pipeline). Every size and setting comes from the fixture folder, so any golden set
(``ANYCHARV_REFERENCE_DIR``) can be checked.
"""

from __future__ import annotations

import json
import time

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler
from safetensors.torch import load_file

from anycharv.model.official import load_official_components
from anycharv.model.pipeline import PARITY_OPTIONS, AnyCharVPipeline

UNIT_ATOL = 1e-4
E2E_ATOL = 5e-4
UNIT_KEYS = {"alphas_cumprod", "clip_pixel_values", "image_embeds", "encoder_hidden_states",
             "unet_encoder_hidden_states", "ref_image_tensor", "ref_image_latents", "tgt_latents",
             "tgt_mask_latent", "pose_fea", "init_latents", "timesteps"}


def _run_settings(reference_dir):
    run = json.loads((reference_dir / "configs" / "run.json").read_text())
    assert run["context_schedule"] == "uniform" and run["context_batch_size"] == 1
    assert run["interpolation_factor"] == 1 and run["dtype"] == "float32"
    return run


def reader_bank_dtypes(unet) -> set:
    """dtypes of the reference banks the denoising UNet's self-attention processors hold right now."""
    found = set()
    for module in unet.modules():
        bank = getattr(getattr(getattr(module, "attn1", None), "processor", None), "bank", None)
        if isinstance(bank, torch.Tensor):
            found.add(bank.dtype)
    return found


class Recorder:
    """Hooks on the pipeline's own modules; records what each call received and returned."""

    def __init__(self, pipe: AnyCharVPipeline):
        self.clip_in, self.clip_out, self.ref_calls, self.pose_out = [], [], [], []
        self.vae_encoder_in, self.unet_calls, self.steps = [], [], []
        self.handles = [
            pipe.image_encoder.register_forward_hook(self._clip, with_kwargs=True),
            pipe.reference_unet.register_forward_hook(self._ref, with_kwargs=True),
            pipe.pose_guider.register_forward_hook(lambda m, a, o: self.pose_out.append(o.clone())),
            pipe.vae.encoder.register_forward_pre_hook(lambda m, a: self.vae_encoder_in.append(a[0].clone())),
            pipe.denoising_unet.register_forward_hook(self._unet, with_kwargs=True),
        ]
        self.scheduler = pipe.scheduler
        original = pipe.scheduler.step

        def recording_step(model_output, timestep, sample, *args, **kwargs):
            out = original(model_output, timestep, sample, *args, **kwargs)
            self.steps.append({"model_output": model_output.clone(), "t": timestep.clone(),
                               "latents_in": sample.clone(), "latents_out": out.prev_sample.clone()})
            return out

        pipe.scheduler.step = recording_step

    @staticmethod
    def _arg(args, kwargs, index, name):
        return args[index] if len(args) > index else kwargs[name]

    def _clip(self, module, args, kwargs, out):
        self.clip_in.append(self._arg(args, kwargs, 0, "pixel_values").clone())
        self.clip_out.append(out.image_embeds.clone())

    def _ref(self, module, args, kwargs, out):
        self.ref_calls.append({"sample": self._arg(args, kwargs, 0, "sample").clone(),
                               "t": self._arg(args, kwargs, 1, "timestep"),
                               "ehs": self._arg(args, kwargs, 2, "encoder_hidden_states").clone()})

    def _unet(self, module, args, kwargs, out):
        self.unet_calls.append({"sample": self._arg(args, kwargs, 0, "sample").clone(),
                                "t": self._arg(args, kwargs, 1, "timestep"),
                                "ehs": self._arg(args, kwargs, 2, "encoder_hidden_states").clone(),
                                "pose": self._arg(args, kwargs, 3, "pose_cond_fea").clone(),
                                "out": out.clone(), "bank_dtypes": reader_bank_dtypes(module)})

    def close(self, pipe):
        for h in self.handles:
            h.remove()
        del pipe.scheduler.step  # back to the class method


@pytest.fixture(scope="module")
def parity_pipe(reference_dir):
    components = load_official_components(reference_dir)
    cfg = json.loads((reference_dir / "configs" / "scheduler.json").read_text())
    pipe = AnyCharVPipeline.from_components(components, scheduler=DDIMScheduler(**cfg["constructor_kwargs"]),
                                            parity=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pil_inputs(reference_dir):
    inp = load_file(str(reference_dir / "inputs_uint8.safetensors"))
    ref = PIL.Image.fromarray(inp["ref_image"].numpy(), mode="RGB")
    tgt = [PIL.Image.fromarray(f, mode="RGB") for f in inp["tgt_frames"].numpy()]
    pose = [PIL.Image.fromarray(f, mode="RGB") for f in inp["pose_frames"].numpy()]
    masks = [PIL.Image.fromarray(m, mode="L") for m in inp["tgt_masks"].numpy()]
    return ref, tgt, pose, masks, inp


def _generate(pipe, reference_dir, guidance, **call_kwargs):
    run = _run_settings(reference_dir)
    ref, tgt, pose, masks, inp = _pil_inputs(reference_dir)
    assert len(tgt) == run["video_length"]
    rec = Recorder(pipe)
    start = time.perf_counter()
    try:
        out = pipe(ref, tgt, pose, masks, height=run["height"], width=run["width"],
                   num_inference_steps=run["steps"], guidance_scale=guidance, eta=run["eta"],
                   generator=torch.manual_seed(run["gen_seed"]), context_frames=run["context_frames"],
                   context_overlap=run["context_overlap"], context_stride=run["context_stride"],
                   output_type="pt", **call_kwargs)
    finally:
        rec.close(pipe)
    rec.seconds = time.perf_counter() - start
    rec.video = out.frames.permute(0, 2, 1, 3, 4)  # (1,F,3,H,W) -> golden layout (1,3,F,H,W)
    rec.inputs = inp
    return rec


def _computed(rec: Recorder, pipe, windows: list[list[int]], golden: dict) -> dict[str, torch.Tensor]:
    """Our tensor for each golden name (only those the golden file holds)."""
    num_windows = len(windows)
    frames = rec.steps[0]["latents_in"].shape[2]
    first = rec.unet_calls[:num_windows]  # step 0: every frame is in some window
    tgt = torch.zeros_like(golden.get("tgt_latents", torch.zeros(1, 4, frames, *first[0]["sample"].shape[-2:])))
    mask = torch.zeros(1, 1, frames, *first[0]["sample"].shape[-2:])
    for call, window in zip(first, windows):
        tgt[:, :, window] = call["sample"][-1:, 4:8]
        mask[:, :, window] = call["sample"][-1:, 8:9]
    ours = {
        "alphas_cumprod": pipe.scheduler.alphas_cumprod,
        "clip_pixel_values": rec.clip_in[0],
        "image_embeds": rec.clip_out[0],
        "encoder_hidden_states": rec.ref_calls[0]["ehs"],
        "unet_encoder_hidden_states": rec.unet_calls[0]["ehs"],
        "ref_image_tensor": rec.vae_encoder_in[0],
        "ref_image_latents": rec.ref_calls[0]["sample"][-1:],
        "tgt_latents": tgt,
        "tgt_mask_latent": mask,
        "pose_fea": torch.cat(rec.pose_out, dim=2),
        "init_latents": rec.steps[0]["latents_in"],
        "timesteps": torch.stack([s["t"] for s in rec.steps]).cpu(),
        "final_latents": rec.steps[-1]["latents_out"],
        "video": rec.video,
    }
    for i, step in enumerate(rec.steps):
        for key in ("latents_in", "latents_out", "model_output"):
            ours[f"step{i}_{key}"] = step[key]
        for w in range(num_windows):
            call = rec.unet_calls[i * num_windows + w]
            ours[f"step{i}_win{w}_unet_input"] = call["sample"]
            ours[f"step{i}_win{w}_unet_out"] = call["out"]
    return ours


@pytest.mark.parametrize("golden_name", ["e2e_golden", "e2e_nocfg_golden"])
def test_pipeline_parity_matches_official_long_video(parity_pipe, reference_dir, golden_name, record_property):
    run = _run_settings(reference_dir)
    info = json.loads((reference_dir / "generation_info.json").read_text())["e2e"]
    golden = load_file(str(reference_dir / f"{golden_name}.safetensors"))
    guidance = run["cfg"] if golden_name == "e2e_golden" else info["nocfg_run"]["guidance"]
    windows = info["windows"] if golden_name == "e2e_golden" else info["nocfg_run"]["windows"]
    rec = _generate(parity_pipe, reference_dir, guidance)

    # structure: steps, windows, timesteps, per-call arguments
    assert len(rec.steps) == run["steps"]
    assert len(rec.unet_calls) == run["steps"] * len(windows)
    assert len(rec.ref_calls) == 1, "ReferenceNet must run once per generation"
    assert int(rec.ref_calls[0]["t"]) == 0
    halves = 2 if guidance > 1 else 1
    for i, call in enumerate(rec.unet_calls):
        step = rec.steps[i // len(windows)]
        assert torch.equal(torch.as_tensor(call["t"]), step["t"])
        assert call["sample"].shape[0] == halves
        torch.testing.assert_close(call["ehs"], rec.unet_calls[0]["ehs"], rtol=0, atol=0)
        pose_expected = torch.cat(rec.pose_out, dim=2)[:, :, windows[i % len(windows)]].repeat(halves, 1, 1, 1, 1)
        torch.testing.assert_close(call["pose"], pose_expected, rtol=0, atol=0)
    # quirk 4: banks are rounded to float16 even in this float32 run
    assert all(call["bank_dtypes"] == {torch.float16} for call in rec.unet_calls)
    if halves == 2:
        assert torch.count_nonzero(rec.unet_calls[0]["ehs"][0]) == 0, "uncond context must be zeros"
    # processed target frames = 2*frames/255-1 (derivable, not stored)
    tgt_pixels = torch.cat(rec.vae_encoder_in[1:])
    expected = rec.inputs["tgt_frames"].permute(0, 3, 1, 2).float() / 255 * 2 - 1
    torch.testing.assert_close(tgt_pixels, expected, rtol=0, atol=1e-6)

    ours = _computed(rec, parity_pipe, windows, golden)
    diffs = {}
    for name, ref in golden.items():
        assert name in ours, f"golden tensor {name} is not checked"
        mine = ours[name].detach().cpu()
        assert tuple(mine.shape) == tuple(ref.shape), f"{name}: shape {tuple(mine.shape)} vs {tuple(ref.shape)}"
        if ref.dtype == torch.int64:
            assert torch.equal(mine.to(torch.int64), ref), name
            diffs[name] = 0.0
            continue
        diffs[name] = (mine.double() - ref.double()).abs().max().item()
        atol = UNIT_ATOL if name in UNIT_KEYS else E2E_ATOL
        assert diffs[name] <= atol, f"{name}: max abs diff {diffs[name]:.3g} > {atol}"

    # the uint8 video as the official script writes it (truncation), +-1 slack
    if golden_name == "e2e_golden":
        u8 = parity_pipe.postprocess(ours["final_latents"], "uint8", options=PARITY_OPTIONS)[0]
        ref_u8 = load_file(str(reference_dir / "e2e_video_uint8.safetensors"))["video_uint8"].numpy()
        assert u8.shape == ref_u8.shape
        off = np.abs(u8.astype(np.int16) - ref_u8.astype(np.int16))
        diffs["video_uint8"] = int(off.max())
        assert off.max() <= 1
        assert (off == 0).mean() > 0.99
    worst = max(diffs, key=diffs.get)
    record_property("max_abs_diffs", json.dumps(diffs))
    record_property("seconds", round(rec.seconds, 2))
    print(f"\n{golden_name}: {len(diffs)} tensors, worst {worst} = {diffs[worst]:.3g}, run {rec.seconds:.1f}s")
    print(json.dumps({k: float(f"{v:.3g}") for k, v in sorted(diffs.items())}))


@pytest.mark.parametrize(("golden_name", "batch"), [("e2e_golden", 2), ("e2e_golden", 3), ("e2e_nocfg_golden", 2)])
def test_batched_windows_give_the_official_result_in_fewer_calls(parity_pipe, reference_dir, golden_name, batch):
    """``context_batch_size``: windows share UNet calls ([uncond windows, cond windows] rows); every
    step's latents still match the official run (which batched nothing)."""
    run = _run_settings(reference_dir)
    info = json.loads((reference_dir / "generation_info.json").read_text())["e2e"]
    golden = load_file(str(reference_dir / f"{golden_name}.safetensors"))
    guidance = run["cfg"] if golden_name == "e2e_golden" else info["nocfg_run"]["guidance"]
    windows = info["windows"] if golden_name == "e2e_golden" else info["nocfg_run"]["windows"]
    assert len(windows) > 1, "this golden set has one window; batching cannot be checked on it"
    rec = _generate(parity_pipe, reference_dir, guidance, context_batch_size=batch)

    calls_per_step = -(-len(windows) // batch)
    assert len(rec.unet_calls) == run["steps"] * calls_per_step
    halves = 2 if guidance > 1 else 1
    assert rec.unet_calls[0]["sample"].shape[0] == halves * min(batch, len(windows))
    assert all(call["bank_dtypes"] == {torch.float16} for call in rec.unet_calls)
    checked = 0
    for name, ref in golden.items():
        if name == "final_latents" or (name.startswith("step") and name.endswith(("_latents_out", "_model_output"))):
            step, key = name.split("_", 1) if name != "final_latents" else (None, name)
            mine = rec.steps[-1]["latents_out"] if step is None else rec.steps[int(step[4:])][key]
            diff = (mine.detach().cpu().double() - ref.double()).abs().max().item()
            assert diff <= E2E_ATOL, f"{name}: max abs diff {diff:.3g} > {E2E_ATOL}"
            checked += 1
    assert checked >= run["steps"] + 1
