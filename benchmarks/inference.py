"""Inference benchmark: seconds per output frame, peak memory and where the time goes.

    python benchmarks/inference.py --out benchmarks/results/inference-cpu.json           # CPU part
    python benchmarks/inference.py --out benchmarks/results/inference-gpu.json --gpu     # + GPU part

CPU part (always): the random ``--preset tiny`` networks, (a) the pipeline alone on synthetic
inputs, with the time split per network, and (b) the whole ``anycharv infer`` path on a real sample
video (tracking, pose, reference cut-out, pipeline, paste-back, mp4). Peak memory is the process's
peak RSS.

GPU part (``--gpu``, skipped with a note when CUDA is absent): SD-1.5-size networks (the released
architecture) with random weights, 24 frames at 576x1024, 30 steps, guidance 3, in fp16 and bf16,
eager and with ``torch.compile`` of the denoising UNet. Reports s/frame, peak GB
(``torch.cuda.max_memory_allocated``) and the split UNet / ReferenceNet / VAE / others.

Each case runs in a fresh subprocess so peak memory is per case. The JSON holds the machine and
package versions next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_env import machine_info  # benchmarks/ is on sys.path when run as a script

PACKAGES = ["torch", "diffusers", "transformers", "numpy", "av", "ultralytics", "onnxruntime",
            "opencv-python", "opencv-python-headless", "decord"]

# ----------------------------------------------------------------------------------------- environment
# ----------------------------------------------------------------------------------------- timing
class ModuleTimer:
    """Sums the forward time of named modules: CUDA events on GPU (no extra syncs), wall clock on CPU."""

    def __init__(self, modules: dict, cuda: bool):
        import torch

        self.cuda = cuda
        self.spans: dict[str, list] = {name: [] for name in modules}
        self.handles = []
        for name, module in modules.items():
            def pre(_m, _args, name=name):
                start = torch.cuda.Event(enable_timing=True) if self.cuda else time.perf_counter()
                if self.cuda:
                    start.record()
                self.spans[name].append([start, None])

            def post(_m, _args, _out, name=name):
                end = torch.cuda.Event(enable_timing=True) if self.cuda else time.perf_counter()
                if self.cuda:
                    end.record()
                self.spans[name][-1][1] = end

            self.handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def seconds(self) -> dict[str, float]:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        out = {}
        for name, spans in self.spans.items():
            if self.cuda:
                out[name] = sum(s.elapsed_time(e) for s, e in spans if e is not None) / 1000.0
            else:
                out[name] = sum(e - s for s, e in spans if e is not None)
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def peak_rss_gb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30


# ----------------------------------------------------------------------------------------- networks
def build_components(arch: str, device, dtype, seed: int = 0) -> dict:
    """Random networks: ``tiny`` (golden-set-A architecture) or ``sd15`` (the released architecture,
    ``anycharv.model.sd15``), built directly on ``device`` so no multi-GB CPU copy is made."""
    if arch == "tiny":
        from anycharv.model.tiny import build_tiny_components

        comps = build_tiny_components(seed=seed)
        return {k: m.to(device=device, dtype=dtype) for k, m in comps.items()}
    if arch != "sd15":
        raise ValueError(f"unknown arch {arch!r}")
    from anycharv.model.sd15 import build_sd15_components

    return build_sd15_components(device, dtype, seed)


def count_params(comps: dict) -> dict[str, float]:
    return {k: round(sum(p.numel() for p in m.parameters()) / 1e6, 2) for k, m in comps.items()}


# ----------------------------------------------------------------------------------------- cases
def _synthetic_inputs(frames: int, width: int, height: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    tgt = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    pose = np.zeros_like(tgt)
    pose[:, height // 4:3 * height // 4, width // 3:2 * width // 3] = 200
    masks = np.zeros((frames, height, width), np.uint8)
    masks[:, height // 8:7 * height // 8, width // 4:3 * width // 4] = 255
    return ref, tgt, pose, masks


def run_pipeline_case(p: dict) -> dict:
    """One pipeline-only measurement (networks of ``p['arch']``) in this process."""
    import torch

    from anycharv.devices import pick_device, pick_dtype
    from anycharv.model.pipeline import AnyCharVPipeline

    device = pick_device(p["device"])
    dtype = pick_dtype(device, p["dtype"])
    cuda = device.type == "cuda"
    t0 = time.perf_counter()
    comps = build_components(p["arch"], device, dtype)
    build_s = time.perf_counter() - t0
    pipe = AnyCharVPipeline.from_components(comps)
    pipe.set_progress_bar_config(disable=True)
    if p["compile"]:
        pipe.enable_compile(mode=p.get("compile_mode") or "default")
    ref, tgt, pose, masks = _synthetic_inputs(p["frames"], p["width"], p["height"])

    def call(steps: int):
        gen = torch.Generator(device="cpu").manual_seed(0)
        return pipe(ref, tgt, pose, masks, height=p["height"], width=p["width"], num_inference_steps=steps,
                    guidance_scale=p["guidance"], generator=gen, context_frames=p["context_frames"],
                    context_overlap=p["context_overlap"], output_type="uint8")

    result = {**p, "device_name": str(device), "torch_dtype": str(dtype).replace("torch.", ""),
              "params_million": count_params(comps), "build_s": round(build_s, 2)}
    if p["warmup_steps"]:
        t0 = time.perf_counter()
        call(p["warmup_steps"])
        if cuda:
            torch.cuda.synchronize()
        result["warmup_s"] = round(time.perf_counter() - t0, 2)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = peak_rss_gb()
    # Split: every network except a compiled UNet is hooked; the compiled UNet's time is the remainder.
    hooked = {"reference_unet": pipe.reference_unet, "pose_guider": pipe.pose_guider,
              "vae_encode": pipe.vae.encoder, "vae_decode": pipe.vae.decoder, "image_encoder": pipe.image_encoder}
    if not p["compile"]:
        hooked["denoising_unet"] = pipe.denoising_unet
    timer = ModuleTimer(hooked, cuda)
    load_before, cpu0 = os.getloadavg()[0], time.process_time()
    t0 = time.perf_counter()
    out = call(p["steps"])
    if cuda:
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    result["process_cpu_s"] = round(time.process_time() - cpu0, 2)
    result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    split = timer.seconds()
    timer.remove()
    if p["compile"]:
        split["denoising_unet"] = total - sum(split.values())
        result["split_note"] = ("denoising_unet = total minus the hooked networks (the compiled module is not "
                                "hooked), so it includes the pipeline's own overhead")
    else:
        split["other"] = total - sum(split.values())
    assert out.frames.shape[1] == p["frames"]
    result.update(
        seconds_total=round(total, 3), seconds_per_frame=round(total / p["frames"], 4),
        split_s={k: round(v, 3) for k, v in split.items()},
        split_share={k: round(v / total, 3) for k, v in split.items()},
        peak_rss_gb=round(peak_rss_gb(), 3), rss_before_run_gb=round(rss_before, 3),
    )
    if cuda:
        result["peak_gpu_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        result["peak_gpu_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
    return result


def run_e2e_case(p: dict) -> dict:
    """The whole ``anycharv infer`` path (tiny preset) on a real sample video, in this process."""
    from anycharv.assets import asset_path
    from anycharv.devices import pick_device, pick_dtype
    from anycharv.inference.video import infer_video, isnet_segmenter
    from anycharv.model.components import build_pipeline, load_components
    from anycharv.model.video_writer import write_video

    device = pick_device(p["device"])
    t0 = time.perf_counter()
    pipe = build_pipeline(load_components(preset="tiny"), device=device, dtype=pick_dtype(device, p["dtype"]))
    pipe.set_progress_bar_config(disable=True)
    segment = isnet_segmenter()
    load_s = time.perf_counter() - t0
    load_before, cpu0 = os.getloadavg()[0], time.process_time()
    t0 = time.perf_counter()
    res = infer_video(pipe, str(asset_path(p["ref"])), str(asset_path(p["video"])), size=p["short_side"],
                      max_frames=p["frames"], steps=p["steps"], guidance=p["guidance"], segment=segment,
                      context_frames=p["context_frames"], context_overlap=p["context_overlap"])
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        write_video(Path(tmp) / "out.mp4", res.video, res.fps)
        write_s = time.perf_counter() - t1
    total = time.perf_counter() - t0
    n = len(res.video)
    timings = {k: round(v, 3) for k, v in res.timings.items() if isinstance(v, float)}
    return {**p, "device_name": str(device), "model_size": list(res.target.model_size),
            "source_size": list(res.target.source_size), "load_s": round(load_s, 2),
            "seconds_total": round(total, 3), "seconds_per_frame": round(total / n, 4),
            "pipeline_seconds_per_frame": round(res.timings["pipeline_s"] / n, 4),
            "stages_s": {**timings, "write_s": round(write_s, 3)}, "peak_rss_gb": round(peak_rss_gb(), 3),
            "process_cpu_s": round(time.process_time() - cpu0, 2),
            "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def cpu_cases(args) -> list[dict]:
    base = dict(kind="pipeline", arch="tiny", device="cpu", dtype="fp32", compile=False, warmup_steps=0,
                guidance=3.0, context_frames=24, context_overlap=6)
    return [
        {**base, "name": "tiny-cpu-pipeline", "frames": args.cpu_frames, "width": args.cpu_width,
         "height": args.cpu_height, "steps": args.cpu_steps},
        {"kind": "e2e", "name": "tiny-cpu-infer-e2e", "device": "cpu", "dtype": "fp32", "ref": "astronaut.png",
         "video": "sports2d_demo.mp4", "frames": args.cpu_frames, "short_side": args.cpu_height,
         "steps": args.cpu_steps, "guidance": 3.0, "context_frames": 24, "context_overlap": 6},
    ]


def gpu_cases(args) -> list[dict]:
    base = dict(kind="pipeline", arch="sd15", device="cuda", frames=args.gpu_frames, width=576, height=1024,
                steps=args.gpu_steps, guidance=3.0, context_frames=24, context_overlap=6, warmup_steps=2)
    cases = []
    for dtype in ("fp16", "bf16"):
        for compiled in (False, True):
            name = f"sd15-{dtype}{'-compile' if compiled else ''}"
            cases.append({**base, "name": name, "dtype": dtype, "compile": compiled})
    return cases


def run_in_subprocess(case: dict, timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "case.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps(case))
        cmd = [sys.executable, __file__, "--run-case", str(spec), "--case-out", str(out)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {**case, "error": f"timed out after {timeout} s"}
        if proc.returncode != 0 or not out.exists():
            return {**case, "error": (proc.stderr or proc.stdout)[-2000:]}
        result = json.loads(out.read_text())
        result["wall_s_incl_startup"] = round(time.perf_counter() - t0, 2)
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="JSON result file")
    parser.add_argument("--gpu", action="store_true", help="also run the SD-1.5-size GPU cases")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU cases")
    parser.add_argument("--cpu-frames", type=int, default=24)
    parser.add_argument("--cpu-width", type=int, default=224)
    parser.add_argument("--cpu-height", type=int, default=128, help="also the short side of the e2e case")
    parser.add_argument("--cpu-steps", type=int, default=30)
    parser.add_argument("--gpu-frames", type=int, default=24)
    parser.add_argument("--gpu-steps", type=int, default=30)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per case")
    parser.add_argument("--run-case", help=argparse.SUPPRESS)
    parser.add_argument("--case-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run_case:  # child process: one case
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()  # dtype-cast notices of freshly built random networks
        case = json.loads(Path(args.run_case).read_text())
        result = run_e2e_case(case) if case["kind"] == "e2e" else run_pipeline_case(case)
        Path(args.case_out).write_text(json.dumps(result))
        return 0
    if not args.out:
        parser.error("--out is required")

    import torch

    cases, skipped = [], []
    if not args.no_cpu:
        cases += cpu_cases(args)
    if args.gpu:
        if torch.cuda.is_available():
            cases += gpu_cases(args)
        else:
            skipped += [{"name": c["name"], "reason": "no CUDA GPU on this machine"} for c in gpu_cases(args)]
    else:
        skipped.append({"name": "sd15-*", "reason": "GPU cases not requested (--gpu)"})
    results = []
    for case in cases:
        print(f"[bench] {case['name']} ...", file=sys.stderr, flush=True)
        res = run_in_subprocess(case, args.timeout)
        results.append(res)
        summary = res.get("error") or f"{res['seconds_per_frame']} s/frame, peak RSS {res['peak_rss_gb']} GB" + (
            f", peak GPU {res['peak_gpu_allocated_gb']} GB" if "peak_gpu_allocated_gb" in res else "")
        print(f"[bench] {case['name']}: {summary}", file=sys.stderr, flush=True)
    report = {"benchmark": "inference", "created_unix": int(time.time()), "machine": machine_info(PACKAGES),
              "cases": results, "skipped": skipped}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out)
    print(json.dumps(report, indent=2))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
