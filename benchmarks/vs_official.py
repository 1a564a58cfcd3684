"""Our pipeline in parity mode against the official AnyCharV implementation: speed, memory, agreement (CPU).

    tools/official_env.sh /tmp/official-venv                # once: the official code's venv (Python 3.11)
    .venv/bin/python benchmarks/vs_official.py --official-src DIR --official-python /tmp/official-venv/bin/python \\
        --out benchmarks/results/vs-official-cpu.json [--sizes tiny,sd15-small] [--frames 24,72] [--rounds 3] \\
        [--steps 20] [--height 256 --width 256] [--ours-args "decode_chunk_size=4"] [--work-dir DIR]
        [--ours-solver unipc --ours-steps 6]    # few-step solver vs the official --steps DDIM (video_psnr_db)

``DIR`` is a clone of github AnyCharV/AnyCharV (checked with HEAD ef9595d); nothing of it is part of
this project. Each side runs in its own virtual environment, in a fresh subprocess per run:
``benchmarks/official_side.py`` in the official venv (torch 2.13.0 CPU, diffusers 0.28.0, transformers
4.44.2; only the official ``src`` package and those libraries), ``benchmarks/ours_side.py`` in ours
(``AnyCharVPipeline.from_components(load_official_components(folder), parity=True)``).

1. Weights: one folder per size in the golden-data format (``configs/*.json`` with ``class_name``,
   ``constructor_kwargs`` and ``resolved_config``; ``weights/*.safetensors`` in official state-dict naming),
   so both sides load exactly the same tensors. ``tiny`` is golden set A's weights as they are
   (``--reference-dir``); ``sd15-small`` is the SD-1.5 block layout (4 levels, 2 layers per block, 8 heads,
   motion modules everywhere, the release pose guider) at widths 64/128/256/256 with cross-attention width
   256, a 4-level VAE at 32/64/128/128 and a 4-layer CLIP vision tower, random and seeded: built from our
   classes (``torch.manual_seed(1234)``, order vae, reference_unet, denoising_unet, pose_guider,
   image_encoder), then the tensors the constructors leave trivial re-randomised as in the golden sets
   (zeros -> N(0, 1/fan_in), or 0.05*N for vectors; all-ones vectors -> 1+0.1*N; generator 4321) and the
   VAE decoder's ``conv_out`` halved. Before a size is measured both sides load its folder once
   (``--check-only``); the official side loads with ``load_state_dict(strict=True)``.
2. Inputs: deterministic synthetic uint8 data (seed 11) at ``--height`` x ``--width`` and each frame count:
   a reference figure, target frames of a figure walking over a moving gradient, stick-figure pose renders,
   box masks (255 inside, first row and column of the box 128, 0 outside), in one safetensors file.
3. Runs: per case (size x frames) ``--rounds`` rounds of one official and one ours process; the order flips
   every round (O,U / U,O / ...) so slow drifts of the machine hit both. Each side times its imports, the
   loading and the pipeline call alone (``perf_counter``; no warm-up: every process is fresh, so the first
   call's one-off costs are in it, as for a user running a script), with guidance ``--guidance``, the steps
   given, context_frames 24, overlap 6, ``torch.manual_seed(42)``. The driver measures each process's wall
   time (spawn to exit) and its own peak RSS and CPU seconds (``os.wait4`` on its pid), and the 1-min load
   average before and after.
4. Report: per case and side the median and every round of process wall, call, import and load seconds,
   the seconds from the first line of the side script to the first denoising-UNet call (``first_step_s``:
   start-up as a user waits for it), peak RSS and peak anonymous RSS MB (see ``AnonPeak``), ours/official
   ratios of the medians, and agreement of each round's outputs: max and mean abs diff of the final latents
   (the VAE decode input), max abs diff of the uint8 video and how many values and pixels differ; plus
   whether each side repeated itself bit for bit across rounds. A table is printed; the JSON (``--out``,
   rewritten after every case) holds the machine, both sides' package versions and the settings.

Timing boundaries: the official ``call_s`` is the pipeline call (decode to a float video included); its
uint8 conversion (the script's ``(x*255).numpy().astype(np.uint8)``) is ``postprocess_s``, outside. Ours
runs with ``output_type="uint8"``, so its ``call_s`` includes that conversion. ``import_s`` starts at the
first line of each side script (interpreter start-up is in the process wall time only). Progress bars
are off on both sides (``TQDM_DISABLE=1``). Both run float32 on CPU with the same torch thread count
(``--threads``, default torch's).

Load: the numbers are only as good as the machine is quiet. With torch's default of one thread per core,
any other busy process makes every parallel op wait for a descheduled thread: on this 2-core machine a
small pipeline call went from 0.15 s (1 thread) to 4-20 s (2 threads) while another job used one core. On
a shared machine pass ``--threads 1`` (both sides) and read ``load_avg_before`` / ``load_avg_after`` and
``cpu_user_s`` of each run in the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench_env import machine_info  # benchmarks/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_REFERENCE_DIR = REPO.parent / "shared" / "reference" / "anycharv-tiny-a"
PACKAGES = ["torch", "diffusers", "transformers", "numpy", "pillow", "safetensors"]
MODELS = ("vae", "reference_unet", "denoising_unet", "pose_guider", "image_encoder")
MODEL_SEED, PERTURB_SEED, INPUT_SEED, GEN_SEED = 1234, 4321, 11, 42
METRICS = ("process_wall_s", "call_s", "import_s", "load_s", "first_step_s", "peak_rss_mb", "peak_anon_mb")


# ----------------------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class SizeSpec:
    """Widths of a random SD-1.5-layout model (the layout itself is the release's)."""

    unet_widths: tuple[int, ...] = (64, 128, 256, 256)
    cross_attention_dim: int = 256
    pose_guider_widths: tuple[int, ...] = (16, 32, 96, 256)  # the release pose guider
    vae_widths: tuple[int, ...] = (32, 64, 128, 128)
    vae_layers: int = 2
    vae_groups: int = 32
    clip_hidden: int = 128
    clip_layers: int = 4
    clip_heads: int = 4
    clip_patch: int = 14


SIZES: dict[str, SizeSpec | None] = {"tiny": None, "sd15-small": SizeSpec()}


def _entry(template: dict, class_name: str, changes: dict) -> dict:
    """A config entry in the golden format: ``template``'s kwargs with ``changes`` applied to both the
    constructor kwargs and the resolved config (the class's defaults for everything not passed)."""
    return {"class_name": class_name,
            "constructor_kwargs": {**template["constructor_kwargs"], **changes},
            "resolved_config": {**template["resolved_config"], **changes}}


def official_configs(spec: SizeSpec, template_dir: Path) -> dict[str, dict]:
    """Config entries of the five models of ``spec`` in the SD-1.5 layout, on the golden set's JSON files
    (``template_dir/configs``) so every other setting is the golden set's."""
    from anycharv.model.official_configs import RELEASE_MOTION, RELEASE_UNET_2D, to_3d_block

    tpl = {name: json.loads((template_dir / "configs" / f"{name}.json").read_text()) for name in MODELS}
    layout = {key: RELEASE_UNET_2D[key] for key in ("down_block_types", "mid_block_type", "up_block_types",
                                                     "layers_per_block", "attention_head_dim")}
    unet = {**layout, "block_out_channels": list(spec.unet_widths), "cross_attention_dim": spec.cross_attention_dim}
    unet3d = {**unet, "down_block_types": [to_3d_block(b) for b in layout["down_block_types"]],
              "mid_block_type": to_3d_block(layout["mid_block_type"]),
              "up_block_types": [to_3d_block(b) for b in layout["up_block_types"]],
              **{key: RELEASE_MOTION[key] for key in ("use_motion_module", "motion_module_resolutions",
                                                      "motion_module_mid_block", "motion_module_decoder_only",
                                                      "motion_module_type", "motion_module_kwargs")}}
    vae = {"block_out_channels": list(spec.vae_widths), "layers_per_block": spec.vae_layers,
           "norm_num_groups": spec.vae_groups, "sample_size": 256}
    clip = {"hidden_size": spec.clip_hidden, "intermediate_size": 4 * spec.clip_hidden,
            "projection_dim": spec.cross_attention_dim, "num_hidden_layers": spec.clip_layers,
            "num_attention_heads": spec.clip_heads, "patch_size": spec.clip_patch}
    pose = {"conditioning_embedding_channels": spec.unet_widths[0],
            "block_out_channels": list(spec.pose_guider_widths)}
    encoder = tpl["image_encoder"]
    return {
        "vae": _entry(tpl["vae"], tpl["vae"]["class_name"], vae),
        "reference_unet": _entry(tpl["reference_unet"], tpl["reference_unet"]["class_name"], unet),
        "denoising_unet": _entry(tpl["denoising_unet"], tpl["denoising_unet"]["class_name"], unet3d),
        "pose_guider": _entry(tpl["pose_guider"], tpl["pose_guider"]["class_name"], pose),
        "image_encoder": {"class_name": encoder["class_name"],
                          "constructor_kwargs": {"config": {**encoder["constructor_kwargs"]["config"], **clip}},
                          "resolved_config": {**encoder["resolved_config"], **clip}},
    }


def _perturb_trivial(model, generator) -> None:
    """Re-randomise the tensors a constructor leaves trivial, so every part affects the output."""
    import torch

    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if torch.all(param == 0):
                if param.ndim > 1:
                    param.copy_(torch.randn(param.shape, generator=generator) * param[0].numel() ** -0.5)
                else:
                    param.copy_(0.05 * torch.randn(param.shape, generator=generator))
            elif param.ndim == 1 and torch.all(param == 1):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=generator))


def build_random_models(entries: dict[str, dict]) -> dict:
    """Our modules for the config entries, random (seeded), trivial tensors re-randomised."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from anycharv.model import official_configs as oc
    from anycharv.model.denoising_unet import DenoisingUNet3D
    from anycharv.model.pose_guider import PoseGuider
    from anycharv.model.reference_unet import ReferenceUNet2D

    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(MODEL_SEED)
        models = {
            "vae": AutoencoderKL(**entries["vae"]["constructor_kwargs"]),
            "reference_unet": ReferenceUNet2D(**oc.reference_unet_config(oc.model_kwargs(entries["reference_unet"]))),
            "denoising_unet": DenoisingUNet3D(**oc.denoising_unet_config(oc.model_kwargs(entries["denoising_unet"]))),
            "pose_guider": PoseGuider(**oc.pose_guider_config(oc.model_kwargs(entries["pose_guider"]))),
            "image_encoder": CLIPVisionModelWithProjection(
                CLIPVisionConfig(**entries["image_encoder"]["constructor_kwargs"]["config"])),
        }
    finally:
        torch.random.set_rng_state(state)
    generator = torch.Generator().manual_seed(PERTURB_SEED)
    for name in MODELS:
        _perturb_trivial(models[name], generator)
    with torch.no_grad():  # keeps the decoded video mostly inside [0, 1], as in the golden sets
        models["vae"].decoder.conv_out.weight.mul_(0.5)
        models["vae"].decoder.conv_out.bias.mul_(0.5)
    return {name: model.eval() for name, model in models.items()}


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def build_weights(folder: Path, size: str, reference_dir: Path, spec: SizeSpec | None = None) -> dict:
    """Write the weights folder of ``size`` (or of ``spec``, for tests); kept when it already holds the
    same build. Returns the build record (``configs/build.json``)."""
    from safetensors.torch import save_file

    spec = spec if spec is not None else SIZES[size]
    record = {"size": size, "spec": asdict(spec) if spec else None, "template": str(reference_dir),
              "model_seed": MODEL_SEED if spec else None, "perturb_seed": PERTURB_SEED if spec else None,
              "source": "golden set weights, copied" if spec is None else "random, built with anycharv's modules"}
    record = json.loads(json.dumps(record))  # as stored (tuples become lists), so the stamp compares equal
    stamp = folder / "configs" / "build.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == record:
        return record
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "configs").mkdir(parents=True)
    (folder / "weights").mkdir()
    shutil.copy(reference_dir / "configs" / "scheduler.json", folder / "configs" / "scheduler.json")
    if spec is None:
        for name in MODELS:
            shutil.copy(reference_dir / "configs" / f"{name}.json", folder / "configs" / f"{name}.json")
            shutil.copy(reference_dir / "weights" / f"{name}.safetensors", folder / "weights" / f"{name}.safetensors")
    else:
        entries = official_configs(spec, reference_dir)
        models = build_random_models(entries)
        for name in MODELS:
            _write_json(folder / "configs" / f"{name}.json", entries[name])
            save_file({k: v.detach().contiguous() for k, v in models[name].state_dict().items()},
                      str(folder / "weights" / f"{name}.safetensors"))
    _write_json(stamp, record)
    return record


# ----------------------------------------------------------------------------------------- inputs
def _segment_distance(xx, yy, p, q):
    """Distance of every grid point to the segments p->q; p, q: (F, 2) arrays of (x, y); -> (F, H, W)."""
    import numpy as np

    px, py = p[:, 0, None, None], p[:, 1, None, None]
    dx, dy = (q[:, 0] - p[:, 0])[:, None, None], (q[:, 1] - p[:, 1])[:, None, None]
    t = np.clip(((xx - px) * dx + (yy - py) * dy) / np.maximum(dx * dx + dy * dy, 1e-9), 0, 1)
    return np.hypot(xx - px - t * dx, yy - py - t * dy)


def make_inputs(frames: int, height: int, width: int, seed: int = INPUT_SEED) -> dict:
    """Deterministic synthetic uint8 inputs: ``ref_image`` (H,W,3), ``tgt_frames`` / ``pose_frames``
    (F,H,W,3), ``tgt_masks`` (F,H,W) with 255 inside the box (its first row and column 128), 0 outside."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy[None] / height, xx[None] / width  # (1,H,W), 0..1
    phase = np.linspace(0, 1, frames, dtype=np.float32) if frames > 1 else np.zeros(1, np.float32)
    cx = 0.3 + 0.4 * phase  # the figure walks left to right
    cy = 0.5 + 0.03 * np.sin(4 * np.pi * phase)
    f = phase[:, None, None]

    def figure(cxs, cys):
        cxs, cys = cxs[:, None, None], cys[:, None, None]
        head = ((xx - cxs) / 0.07) ** 2 + ((yy - (cys - 0.28)) / 0.07) ** 2 <= 1
        body = ((xx - cxs) / 0.13) ** 2 + ((yy - (cys + 0.02)) / 0.26) ** 2 <= 1
        return head, body

    # reference: the figure on its own gradient
    ref = np.stack([60 + 120 * xx[0], 80 + 60 * yy[0], 140 - 80 * xx[0]], -1)
    head, body = figure(np.array([0.5]), np.array([0.5]))
    ref[body[0]] = (200, 60, 50)
    ref[head[0]] = (230, 190, 150)
    ref = ref + rng.normal(0, 8, ref.shape)

    # targets: another figure over a moving background
    tgt = np.stack([100 + 90 * np.sin(2 * np.pi * (xx + f)), 90 + 70 * np.cos(2 * np.pi * (yy - 0.5 * f)),
                    120 + 60 * np.sin(2 * np.pi * (xx + yy + f))], -1)
    head, body = figure(cx, cy)
    tgt[body] = (40, 70, 170)
    tgt[head] = (210, 170, 130)
    tgt = tgt + rng.normal(0, 8, tgt.shape)

    # pose: a stick figure following the target figure (black background)
    swing = 0.08 * np.sin(6 * np.pi * phase)
    joints = {
        "neck": (cx, cy - 0.2), "hip": (cx, cy + 0.12),
        "lhand": (cx - 0.15, cy - 0.05 + swing), "rhand": (cx + 0.15, cy - 0.05 - swing),
        "lfoot": (cx - 0.08 - swing, cy + 0.4), "rfoot": (cx + 0.08 + swing, cy + 0.4),
        "head": (cx, cy - 0.28),
    }
    limbs = [("head", "neck", (255, 0, 85)), ("neck", "hip", (255, 170, 0)), ("neck", "lhand", (0, 255, 0)),
             ("neck", "rhand", (0, 170, 255)), ("hip", "lfoot", (170, 0, 255)), ("hip", "rfoot", (255, 255, 0))]
    pose = np.zeros((frames, height, width, 3), np.uint8)
    for a, b, color in limbs:
        p = np.stack(joints[a], -1).astype(np.float32)
        q = np.stack(joints[b], -1).astype(np.float32)
        pose[_segment_distance(xx, yy, p, q) <= 0.015] = color

    # box masks around the target figure
    masks = np.zeros((frames, height, width), np.uint8)
    for i in range(frames):
        x0, x1 = int((cx[i] - 0.17) * width), int((cx[i] + 0.17) * width)
        y0, y1 = int((cy[i] - 0.38) * height), int((cy[i] + 0.45) * height)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        masks[i, y0:y1, x0:x1] = 255
        masks[i, y0, x0:x1] = 128
        masks[i, y0:y1, x0] = 128
    return {"ref_image": np.clip(ref, 0, 255).astype(np.uint8), "tgt_frames": np.clip(tgt, 0, 255).astype(np.uint8),
            "pose_frames": pose, "tgt_masks": masks}


def write_inputs(path: Path, frames: int, height: int, width: int) -> Path:
    from safetensors.numpy import save_file

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(make_inputs(frames, height, width), str(tmp))
        os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------- processes
def parse_ours_args(text: str) -> dict:
    """``"a=1 b=x,c=true"`` -> {"a": 1, "b": "x", "c": True} (JSON values where they parse, else strings)."""
    out = {}
    for item in (s for s in re.split(r"[,\s]+", text.strip()) if s):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--ours-args: expected key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def child_env(official: bool) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1", PYTHONNOUSERSITE="1")
    if official:  # nothing of our environment may leak into the official venv
        for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(key, None)
    return env


class AnonPeak:
    """Highest ``RssAnon`` of a running process, polled from ``/proc/PID/status`` every 10 ms.

    Peak RSS (``ru_maxrss``) also counts the file-backed pages of the shared libraries a process maps,
    and how many of those a process touches depends on the kernel's page-cache state of each file, not on
    the process: the same ``import torch`` measured 222 MB or 275 MB here depending on which copy of
    ``libtorch_cpu.so`` it loaded, byte-identical files. Anonymous memory (tensors, heaps) is what the code
    controls, so both are reported."""

    def __init__(self, pid: int, interval: float = 0.01):
        self.peak_kb, self._path, self._done = 0, f"/proc/{pid}/status", threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(interval,), daemon=True)
        self._thread.start()

    def _poll(self, interval: float) -> None:
        while not self._done.is_set():
            try:
                with open(self._path) as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                            break
            except OSError:
                return
            self._done.wait(interval)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(self.peak_kb / 1024, 1)


def run_process(cmd: list[str], env: dict, log_path: Path, timeout: float) -> dict:
    """Run one side; its wall time, own peak RSS and CPU seconds (``os.wait4``), load averages, JSON line."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out_path = log_path.with_suffix(".stdout")
    load_before = os.getloadavg()
    with open(out_path, "w") as out, open(log_path, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=str(REPO))
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        anon = AnonPeak(proc.pid)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            anon.stop()
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = {"rc": proc.returncode, "process_wall_s": round(wall, 3),
              "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
              "peak_anon_mb": anon.peak_mb,
              "cpu_user_s": round(usage.ru_utime, 2), "cpu_sys_s": round(usage.ru_stime, 2),
              "load_avg_before": [round(x, 2) for x in load_before],
              "load_avg_after": [round(x, 2) for x in os.getloadavg()]}
    report = None
    for line in reversed(out_path.read_text().splitlines()):
        try:
            report = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    if proc.returncode != 0 or not isinstance(report, dict):
        tail = log_path.read_text()[-3000:]
        why = f"timed out after {timeout} s" if proc.returncode == -9 else f"exit code {proc.returncode}"
        result["error"] = f"{why}; stderr tail:\n{tail}"
        return result
    return {**report, **result}


def side_command(side: str, args, weights: Path, inputs: Path | None = None, out: Path | None = None,
                 check_only: bool = False) -> list[str]:
    if side == "official":
        cmd = [args.official_python, str(HERE / "official_side.py"), "--official-src", str(args.official_src)]
    else:
        cmd = [sys.executable, str(HERE / "ours_side.py")]
        if args.ours_args:
            cmd += ["--call-kwargs", json.dumps(parse_ours_args(args.ours_args))]
        if not check_only:
            cmd += ["--solver", args.ours_solver]
    cmd += ["--weights", str(weights), "--threads", str(args.threads)]
    if check_only:
        return cmd + ["--check-only"]
    steps = args.ours_steps if side == "ours" and args.ours_steps else args.steps
    return cmd + ["--inputs", str(inputs), "--out", str(out), "--steps", str(steps), "--guidance",
                  str(args.guidance), "--context-frames", str(args.context_frames), "--context-overlap",
                  str(args.context_overlap), "--seed", str(GEN_SEED)]


# ----------------------------------------------------------------------------------------- comparison
def agreement(official_file: Path, ours_file: Path) -> dict:
    """How far our outputs are from the official ones."""
    import torch
    from safetensors.torch import load_file

    a, b = load_file(str(official_file)), load_file(str(ours_file))
    out = {}
    la, lb = a["final_latents"], b["final_latents"]
    if la.shape != lb.shape:
        return {"error": f"latents shapes differ: official {tuple(la.shape)} vs ours {tuple(lb.shape)}"}
    d = (la.double() - lb.double()).abs()
    out.update(latents_max_abs_diff=float(d.max()), latents_mean_abs_diff=float(d.mean()),
               latents_max_abs_official=float(la.abs().max()))
    va, vb = a["video_uint8"], b["video_uint8"]
    if va.shape != vb.shape:
        return {**out, "error": f"video shapes differ: official {tuple(va.shape)} vs ours {tuple(vb.shape)}"}
    dv = (va.to(torch.int16) - vb.to(torch.int16)).abs()
    mse = float((dv.double() ** 2).mean())
    out["video_psnr_db"] = round(10 * math.log10(255 ** 2 / mse), 2) if mse else float("inf")
    differs = dv > 0
    out.update(video_max_abs_diff=int(dv.max()), video_mean_abs_diff=float(dv.double().mean()),
               video_values_differing=int(differs.sum()), video_values=dv.numel(),
               video_pixels_differing=int(differs.any(-1).sum()), video_pixels=dv[..., 0].numel())
    return out


def identical(first: Path, other: Path) -> bool:
    from safetensors.torch import load_file

    a, b = load_file(str(first)), load_file(str(other))
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and bool((a[k] == b[k]).all()) for k in a)


def summarize(runs: list[dict]) -> dict:
    out = {}
    for metric in METRICS:
        values = [r[metric] for r in runs if metric in r]
        if values:
            out[metric] = {"median": round(statistics.median(values), 3), "rounds": values}
    return out


def ratios(official: dict, ours: dict) -> dict:
    out = {}
    for metric in METRICS:
        if metric in official and metric in ours and official[metric]["median"]:
            out[metric] = round(ours[metric]["median"] / official[metric]["median"], 3)
    return out


def run_case(args, size: str, weights: Path, frames: int, work: Path) -> dict:
    case = {"size": size, "frames": frames, "height": args.height, "width": args.width, "steps": args.steps,
            "ours_solver": args.ours_solver, "ours_steps": args.ours_steps or args.steps}
    name = f"{size}-{frames}f-{args.height}x{args.width}"
    inputs = write_inputs(work / "inputs" / f"{frames}f-{args.height}x{args.width}.safetensors", frames,
                          args.height, args.width)
    (work / "outputs").mkdir(parents=True, exist_ok=True)
    runs = {"official": [], "ours": []}
    first = {}
    agreements, repeats = [], {"official": [], "ours": []}
    for rnd in range(args.rounds):
        order = ("official", "ours") if rnd % 2 == 0 else ("ours", "official")
        outputs = {}
        for position, side in enumerate(order):
            out = work / "outputs" / f"{name}-{side}-r{rnd}.safetensors"
            log = work / "logs" / f"{name}-{side}-r{rnd}.log"
            print(f"[vs-official] {name} round {rnd + 1}/{args.rounds}: {side} ...", file=sys.stderr, flush=True)
            res = run_process(side_command(side, args, weights, inputs, out), child_env(side == "official"), log,
                              args.timeout)
            res.update(round=rnd, position=position)
            runs[side].append(res)
            if "error" in res:
                print(f"[vs-official] {name} {side} failed: {res['error']}", file=sys.stderr, flush=True)
                case.update(runs=runs, error=f"{side} round {rnd}: {res['error'][:500]}")
                return case
            print(f"[vs-official] {name} {side}: call {res['call_s']} s, process {res['process_wall_s']} s, "
                  f"peak RSS {res['peak_rss_mb']} MB", file=sys.stderr, flush=True)
            outputs[side] = out
        agreements.append({"round": rnd, **agreement(outputs["official"], outputs["ours"])})
        for side, out in outputs.items():
            if side not in first:
                first[side] = out
            else:
                repeats[side].append(identical(first[side], out))
                out.unlink()
    for out in first.values():
        if not args.keep_outputs:
            out.unlink()
    official, ours = summarize(runs["official"]), summarize(runs["ours"])
    worst = {key: (min if key == "video_psnr_db" else max)(a[key] for a in agreements) for key in agreements[0]
             if key != "round" and isinstance(agreements[0][key], (int, float))}
    case.update(official=official, ours=ours, ratio_ours_over_official=ratios(official, ours),
                agreement_worst_round=worst, agreement_rounds=agreements,
                bit_identical_across_rounds={side: all(v) if v else None for side, v in repeats.items()},
                runs=runs)
    return case


# ----------------------------------------------------------------------------------------- report
def table(cases: list[dict]) -> str:
    widths = (10, 9, 9, 8, 9, 8, 8)
    lines = [f"{'case':<30} {'side':<9} {'process_s':>10} {'call_s':>9} {'import_s':>9} {'load_s':>8} "
             f"{'1st_step':>9} {'rss_MB':>8} {'anon_MB':>8}"]
    for c in cases:
        name = f"{c['size']} {c['frames']}f {c['height']}x{c['width']} {c['steps']}st"
        if c.get("ours_solver", "ddim") != "ddim":
            name += f" ours:{c['ours_solver']}{c['ours_steps']}"
        if "error" in c:
            lines.append(f"{name:<30} error: {c['error'].splitlines()[0]}")
            continue
        for side in ("official", "ours"):
            m = c[side]
            lines.append(f"{name:<30} {side:<9} " + " ".join(
                f"{m[k]['median']:>{w}.2f}" if k in m else f"{'-':>{w}}"
                for k, w in zip(METRICS, widths)))
            name = ""
        r = c["ratio_ours_over_official"]
        lines.append(f"{'':<30} {'ours/off':<9} " + " ".join(
            f"{r[k]:>{w}.3f}" if k in r else f"{'-':>{w}}" for k, w in zip(METRICS, widths)))
        a = c["agreement_worst_round"]
        lines.append(f"{'':<30} agreement: latents max|d| {a['latents_max_abs_diff']:.2e} "
                     f"(mean {a['latents_mean_abs_diff']:.1e}, max|official| {a['latents_max_abs_official']:.2f}); "
                     f"video max|d| {a['video_max_abs_diff']}, {a['video_values_differing']} of "
                     f"{a['video_values']} values, {a['video_pixels_differing']} pixels differ, "
                     f"PSNR {a['video_psnr_db']} dB")
    return "\n".join(lines)


def official_git_head(src: Path) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-src", required=True, type=Path, help="clone of github AnyCharV/AnyCharV")
    parser.add_argument("--official-python", required=True, help="python of the venv made by tools/official_env.sh")
    parser.add_argument("--out", required=True, type=Path, help="JSON result file")
    parser.add_argument("--sizes", default="tiny,sd15-small", help=f"comma list of {', '.join(SIZES)}")
    parser.add_argument("--frames", default="24,72", help="comma list of frame counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--context-frames", type=int, default=24, help="official script: 24")
    parser.add_argument("--context-overlap", type=int, default=6, help="official script: 6")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of both sides (0: torch's default)")
    parser.add_argument("--ours-args", default="", help='extra call kwargs of our side, e.g. "decode_chunk_size=4"')
    parser.add_argument("--ours-solver", default="ddim", choices=["ddim", "dpmpp", "unipc"],
                        help="our sampler (ddim: parity mode); others keep the parity options, only the sampler "
                             "differs: compare the official --steps run with ours at --ours-steps by video_psnr_db")
    parser.add_argument("--ours-steps", type=int, help="our steps (default: --steps)")
    parser.add_argument("--reference-dir", type=Path,
                        default=Path(os.environ.get("ANYCHARV_REFERENCE_DIR", DEFAULT_REFERENCE_DIR)),
                        help="golden set A: the tiny weights and the config templates")
    parser.add_argument("--work-dir", type=Path, help="weights, inputs, outputs and logs (default: a temporary "
                                                       "folder, removed at the end); reused weights are kept")
    parser.add_argument("--keep-outputs", action="store_true", help="keep round 0's result files in --work-dir")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per process")
    args = parser.parse_args(argv)
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.frames = [int(f) for f in args.frames.split(",") if f]
    unknown = [s for s in args.sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; known: {list(SIZES)}")
    if args.height % 8 or args.width % 8:
        parser.error("--height and --width must be multiples of 8")
    if not (args.official_src / "src" / "pipelines" / "pipeline_pose2vid_long_anycharv.py").is_file():
        parser.error(f"--official-src {args.official_src}: no src/pipelines/pipeline_pose2vid_long_anycharv.py")
    if not Path(args.official_python).is_file():
        parser.error(f"--official-python {args.official_python}: no such file")
    if not (args.reference_dir / "weights").is_dir():
        parser.error(f"--reference-dir {args.reference_dir}: no weights/ folder (golden-data format expected)")
    if args.ours_args:
        try:
            parse_ours_args(args.ours_args)
        except ValueError as exc:
            parser.error(str(exc))
    args.official_src = args.official_src.resolve()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    temporary = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="vs-official-")) if temporary else args.work_dir.resolve()
    report = {
        "benchmark": "vs_official", "created_unix": int(time.time()), "machine": machine_info(PACKAGES),
        "official_src": {"path": str(args.official_src), "git_head": official_git_head(args.official_src)},
        "settings": {"sizes": args.sizes, "frames": args.frames, "rounds": args.rounds, "steps": args.steps,
                     "height": args.height, "width": args.width, "guidance": args.guidance,
                     "context_frames": args.context_frames, "context_overlap": args.context_overlap,
                     "context_schedule": "uniform (official) / parity (ours)", "context_batch_size": 1,
                     "generator": f"torch.manual_seed({GEN_SEED})", "dtype": "float32", "device": "cpu",
                     "threads": args.threads or "torch default",
                     "ours_call_kwargs": parse_ours_args(args.ours_args) if args.ours_args else {},
                     "input_seed": INPUT_SEED, "warmup": "none: every run is a fresh process"},
        "sizes": {}, "cases": [],
    }
    failed = False
    if args.threads != 1 and os.getloadavg()[0] >= 1.0:
        print(f"[vs-official] warning: 1-min load average {os.getloadavg()[0]:.2f} before the start; with more "
              "than one torch thread a busy machine distorts the timings (consider --threads 1)", file=sys.stderr)
    try:
        for size in args.sizes:
            weights = work / "weights" / size
            print(f"[vs-official] weights {size} -> {weights}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            record = build_weights(weights, size, args.reference_dir)
            info = {"build": record, "build_s": round(time.perf_counter() - t0, 2),
                    "weights_mb": round(sum(p.stat().st_size for p in (weights / "weights").iterdir()) / 2**20, 1)}
            for side in ("official", "ours"):
                check = run_process(side_command(side, args, weights, check_only=True),
                                    child_env(side == "official"), work / "logs" / f"check-{size}-{side}.log",
                                    args.timeout)
                info[f"check_{side}"] = check
                if "error" in check:
                    raise RuntimeError(f"{side} side cannot load the {size} weights: {check['error']}")
            info["params_million"] = info["check_ours"]["params_million"]
            if info["check_official"]["params_million"] != info["check_ours"]["params_million"]:
                raise RuntimeError(f"{size}: parameter counts differ: {info['check_official']['params_million']} "
                                   f"vs {info['check_ours']['params_million']}")
            report["official_env"] = info["check_official"].get("versions")
            report["sizes"][size] = info
            for frames in args.frames:
                case = run_case(args, size, weights, frames, work)
                report["cases"].append(case)
                failed |= "error" in case
                _write_json(args.out, report)
    except RuntimeError as exc:
        report["error"] = str(exc)
        print(f"[vs-official] {exc}", file=sys.stderr)
        failed = True
    finally:
        _write_json(args.out, report)
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    print(table(report["cases"]))
    print(f"[vs-official] wrote {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
