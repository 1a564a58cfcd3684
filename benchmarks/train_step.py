"""Training throughput: optimizer steps/s and samples/s.

CPU section (always): the tiny networks on a synthetic 64x64 cache (the datasets tests' writer),
through the real training loop, image stage (batch 4) and video stage (8 frames, batch 1):
1 worker in process, and 2 Ray Train (DDP, gloo) workers with the same global batch and with the
same per-worker batch, side by side in one run. The first steps (start-up, allocations) are left
out of the figures.

GPU section (``--gpu``, needs CUDA): SD-1.5-size networks with random weights (the release
layout of ``model/sd15.py``), stage 1 at 768x768 batch 4 and stage 2 at 24x512x512 batch 1, one
training step (forward, backward, AdamW) under bf16 autocast, with and without gradient
checkpointing: step time and peak GPU memory (goal: stage 2 inside 40 GB).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_env import machine_info

REPO = Path(__file__).resolve().parent.parent


def _cache_writer():
    spec = importlib.util.spec_from_file_location("anycharv_bench_cache_fixtures",
                                                  REPO / "tests" / "datasets" / "cache_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _cpu_run(data: Path, run_dir: Path, stage: str, batch: int, workers: int, steps: int, skip: int) -> dict:
    from anycharv.config import load_config
    from anycharv.training.config import TrainJob
    from anycharv.training.launcher import run_training
    from anycharv.training.metrics import read_jsonl

    args = [f"train.stage={stage}", "train.init.preset=tiny", f"train.data.batch_size={batch}",
            "train.data.num_frames=8", "runtime.validation.enabled=false", f"runtime.max_steps={steps}",
            f"runtime.checkpoint.every={steps}", f"runtime.num_workers={workers}", "runtime.log_every=100000",
            f"runtime.launcher={'local' if workers == 1 else 'ray'}"]
    started = time.perf_counter()
    run_training(load_config(TrainJob, None, args), str(data), str(run_dir))
    wall = time.perf_counter() - started
    seconds = [r["seconds"] for r in read_jsonl(run_dir / "metrics.jsonl")][skip:]
    step_s = statistics.median(seconds)
    return {"stage": stage, "workers": workers, "batch_per_worker": batch, "global_batch": batch * workers,
            "steps": steps, "median_step_s": round(step_s, 4), "steps_per_s": round(1 / step_s, 3),
            "samples_per_s": round(batch * workers / step_s, 3), "wall_s_with_startup": round(wall, 2)}


def cpu_section(steps: int) -> dict:
    fx = _cache_writer()
    rows = []
    with tempfile.TemporaryDirectory(prefix="anycharv-bench-train-") as tmp:
        root = Path(tmp)
        clips = fx.clips(16, dim=32, frames=12)
        fx.make_cache(root / "data", clips, per_shard=4)
        import ray

        from anycharv.ray_session import start_local_cluster, stop_local_cluster

        ray_root = start_local_cluster(num_cpus=2, log_to_driver=False)
        try:
            for stage, batch in (("stage1_image", 4), ("stage1_video", 1)):
                configs = [(batch, 1), (max(batch // 2, 1), 2), (batch, 2)] if batch > 1 else [(1, 1), (1, 2)]
                for per_worker, workers in configs:
                    run_dir = root / f"{stage}-{per_worker}x{workers}"
                    rows.append(_cpu_run(root / "data", run_dir, stage, per_worker, workers, steps, skip=3))
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            if ray.is_initialized():
                stop_local_cluster(ray_root)
    by = {(r["stage"], r["workers"], r["batch_per_worker"]): r for r in rows}
    scaling = {}
    for stage, batch in (("stage1_image", 4), ("stage1_video", 1)):
        one = by[(stage, 1, batch)]
        two = by[(stage, 2, batch)]
        scaling[stage] = {"samples_per_s_2_workers_over_1_same_per_worker_batch":
                          round(two["samples_per_s"] / one["samples_per_s"], 3)}
    return {"runs": rows, "scaling": scaling}


def gpu_section() -> dict:
    import torch

    from anycharv.devices import pick_device
    from anycharv.model.sd15 import SD15_DENOISING_UNET, SD15_POSE_GUIDER, SD15_REFERENCE_UNET
    from anycharv.training.network import StageBatch, TrainingNetwork
    from anycharv.training.objective import Objective

    device = pick_device()
    results = []
    cases = [("stage1_image", 768, 768, 1, 4), ("stage2", 512, 512, 24, 1)]
    for stage, height, width, frames, batch in cases:
        for checkpointing in (False, True):
            from anycharv.model.denoising_unet import DenoisingUNet3D
            from anycharv.model.pose_guider import PoseGuider
            from anycharv.model.reference_unet import ReferenceUNet2D

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            with torch.device(device):
                nets = {"reference_unet": ReferenceUNet2D(**SD15_REFERENCE_UNET),
                        "denoising_unet": DenoisingUNet3D(**SD15_DENOISING_UNET),
                        "pose_guider": PoseGuider(**SD15_POSE_GUIDER)}
            trained = ["reference_unet", "denoising_unet", "pose_guider"] if stage == "stage1_image" else [
                "denoising_unet"]
            for name, net in nets.items():
                net.requires_grad_(name in trained)
                net.train(name in trained)
                if checkpointing and name in trained and hasattr(net, "enable_gradient_checkpointing"):
                    net.enable_gradient_checkpointing()
            objective = Objective(0.05, 5.0, 0.1)
            network = TrainingNetwork(nets, objective)
            params = [p for n in trained for p in nets[n].parameters()]
            optimizer = torch.optim.AdamW(params, lr=1e-5)
            lh, lw = height // 8, width // 8
            gen = torch.Generator(device).manual_seed(0)

            def rand(*shape):
                return torch.randn(shape, generator=gen, device=device)

            batch_data = StageBatch(target=rand(batch, 4, frames, lh, lw), condition=rand(batch, 4, frames, lh, lw),
                                    mask=(rand(batch, 1, frames, lh, lw) > 0).float(),
                                    pose=rand(batch, 3, frames, height, width).clamp(0, 1),
                                    ref_latent=rand(batch, 4, lh, lw), ref_clip=rand(batch, 1, 768),
                                    seeds=list(range(batch)))
            times = []
            try:
                for i in range(4):
                    draws = objective.draw([s + 10 * i for s in batch_data.seeds],
                                           tuple(batch_data.target.shape[1:])).to(device)
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    with torch.autocast(device.type, dtype=torch.bfloat16):
                        loss = network(batch_data, draws)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
                row = {"stage": stage, "size": f"{frames}x{height}x{width}", "batch": batch,
                       "gradient_checkpointing": checkpointing, "step_s": round(statistics.median(times[1:]), 3),
                       "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "error": None}
            except torch.cuda.OutOfMemoryError as exc:
                row = {"stage": stage, "size": f"{frames}x{height}x{width}", "batch": batch,
                       "gradient_checkpointing": checkpointing, "step_s": None,
                       "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "error": f"OOM: {exc}"[:200]}
            results.append(row)
            print(json.dumps(row), flush=True)
            del nets, network, optimizer, params
    return {"precision": "bf16 autocast, fp32 weights, AdamW", "runs": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="JSON file to write")
    parser.add_argument("--steps", type=int, default=15, help="optimizer steps per CPU run (3 left out)")
    parser.add_argument("--gpu", action="store_true", help="run the GPU section (needs CUDA)")
    parser.add_argument("--skip-cpu", action="store_true", help="GPU section only")
    args = parser.parse_args()
    report = {"benchmark": "train_step", "machine": machine_info(["torch", "ray", "diffusers"])}
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            print("--gpu: no CUDA device here", file=sys.stderr)
            return 2
        report["gpu"] = gpu_section()
    if not args.skip_cpu:
        report["cpu"] = cpu_section(args.steps)
    report["machine"]["load_avg_1m_at_report"] = machine_info([])["load_avg_1m_at_report"]
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
