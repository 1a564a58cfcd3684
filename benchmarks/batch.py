"""Batch-inference throughput: jobs per hour and seconds per output frame, 1 vs 2 workers.

    python benchmarks/batch.py --out benchmarks/results/batch-cpu.json         # CPU part
    python benchmarks/batch.py --out benchmarks/results/batch-gpu.json --gpu   # + GPU part

Each case runs ``run_batch`` (the code behind ``anycharv batch`` and the flow ``batch_infer``) on a
job table of real sample videos (sports2d, pose2sim) with real references, on the ``ray-actors``
backend with ``runtime.warm_start`` (the workers load the pipeline, detector and ISNet before the
first job, so setup and throughput are reported apart), in a fresh subprocess.

CPU part (always): the random ``--preset tiny`` networks; 1 worker with all the cores' threads vs 2
workers with one thread each (same CPUs in all). Every job does the whole path: decode, person
tracking, pose, reference check and ISNet cut-out, pipeline, paste-back, mp4 with audio, preview.

GPU part (``--gpu``; skipped with a note when CUDA is absent): random SD-1.5-size networks (the
released architecture, ``anycharv.model.sd15``) in the default GPU dtype; 1 worker vs 2 workers
(sharing the GPU when there is one: ``runtime.gpus_per_worker`` 0.5).

jobs/hour = finished jobs / run seconds * 3600; s/frame = run seconds / output frames (run seconds
exclude the workers' setup).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_env import machine_info  # benchmarks/ is on sys.path when run as a script

PACKAGES = ["torch", "diffusers", "transformers", "numpy", "av", "ultralytics", "onnxruntime", "ray", "prefect"]
# (reference, video, start): two videos of one person, a portrait one of two; two references.
JOBS = [("astronaut.png", "sports2d_demo.mp4", 0), ("grace_hopper.jpg", "pose2sim_cam01.mp4", 0),
        ("astronaut.png", "pose2sim_cam02.mp4", 0), ("grace_hopper.jpg", "sports2d_demo.mp4", 60)]


def write_jobs(folder: Path, count: int, frames: int) -> Path:
    from anycharv.assets import asset_path

    lines = ["job_id,reference,video,start,max_frames"]
    for i in range(count):
        ref, video, start = JOBS[i % len(JOBS)]
        lines.append(f"job{i:03d},{asset_path(ref)},{asset_path(video)},{start},{frames}")
    path = folder / "jobs.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_case(case: dict) -> dict:
    """One measurement in this process (a fresh local Ray cluster)."""
    import torch

    from anycharv.config import load_config
    from anycharv.inference.batch_config import BatchJob
    from anycharv.inference.batch_runner import run_batch

    overrides = [f"runtime.executor={case['executor']}", f"runtime.num_workers={case['workers']}",
                 "runtime.warm_start=true", "runtime.progress=false", f"batch.steps={case['steps']}",
                 f"batch.size={case['size']}", f"runtime.cpus_per_worker={case['cpus_per_worker']}",
                 f"runtime.threads_per_worker={case['threads_per_worker']}"]
    if case.get("gpus_per_worker") is not None:
        overrides.append(f"runtime.gpus_per_worker={case['gpus_per_worker']}")
    job = load_config(BatchJob, None, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        table = write_jobs(Path(tmp), case["jobs"], case["frames"])
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        summary = run_batch(job, str(table), str(Path(tmp) / "out"), preset=case["preset"])
        wall = time.perf_counter() - started
        seconds = sorted(r["seconds"] for r in summary.rows if r["status"] == "ok")
    result = {**case, "ok": summary.ok, "rejected": summary.rejected, "failed": summary.failed,
              "reasons": summary.reasons, "frames": summary.frames, "setup_s": summary.setup_s, "run_s": summary.run_s,
              "jobs_per_hour": summary.jobs_per_hour, "seconds_per_frame": summary.seconds_per_frame,
              "job_seconds_median": seconds[len(seconds) // 2] if seconds else None,
              "wall_s": round(wall, 2), "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    if torch.cuda.is_available():
        result["gpu"] = torch.cuda.get_device_name(0)
    return result


def cpu_cases(args) -> list[dict]:
    cores = len(os.sched_getaffinity(0))
    base = dict(preset="tiny", executor="ray-actors", jobs=args.cpu_jobs, frames=args.cpu_frames, size=args.cpu_size,
                steps=args.cpu_steps, gpus_per_worker=0)
    return [{**base, "name": "tiny-cpu-1-worker", "workers": 1, "cpus_per_worker": cores,
             "threads_per_worker": cores},
            {**base, "name": "tiny-cpu-2-workers", "workers": 2, "cpus_per_worker": max(1, cores // 2),
             "threads_per_worker": max(1, cores // 2)}]


def gpu_cases(args) -> list[dict]:
    import torch

    gpus = torch.cuda.device_count()
    base = dict(preset="sd15", executor="ray-actors", jobs=args.gpu_jobs, frames=args.gpu_frames, size=args.gpu_size,
                steps=args.gpu_steps, cpus_per_worker=2, threads_per_worker=2)
    return [{**base, "name": f"sd15-gpu-{workers}-worker{'s' if workers > 1 else ''}", "workers": workers,
             "gpus_per_worker": min(1.0, gpus / workers)} for workers in (1, 2)]


def run_in_subprocess(case: dict, timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "case.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps(case))
        cmd = [sys.executable, __file__, "--run-case", str(spec), "--case-out", str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {**case, "error": f"timed out after {timeout} s"}
        if proc.returncode != 0 or not out.exists():
            return {**case, "error": (proc.stderr or proc.stdout)[-2000:]}
        return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="JSON result file")
    parser.add_argument("--gpu", action="store_true", help="also run the SD-1.5-size GPU cases")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU cases")
    parser.add_argument("--cpu-jobs", type=int, default=4)
    parser.add_argument("--cpu-frames", type=int, default=16, help="output frames per job")
    parser.add_argument("--cpu-size", type=int, default=128, help="model short side")
    parser.add_argument("--cpu-steps", type=int, default=10)
    parser.add_argument("--gpu-jobs", type=int, default=4)
    parser.add_argument("--gpu-frames", type=int, default=24)
    parser.add_argument("--gpu-size", type=int, default=512)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    parser.add_argument("--run-case", help=argparse.SUPPRESS)
    parser.add_argument("--case-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run_case:  # child process: one case
        import logging

        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
        logging.getLogger("anycharv").setLevel(logging.ERROR)  # the tiny preset's random-weights warning
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        result = run_case(json.loads(Path(args.run_case).read_text()))
        Path(args.case_out).write_text(json.dumps(result))
        return 0
    if not args.out:
        parser.error("--out is required")

    import torch

    cases, skipped = [], []
    if not args.no_cpu:
        cases += cpu_cases(args)
    if args.gpu and torch.cuda.is_available():
        cases += gpu_cases(args)
    else:
        reason = "no CUDA GPU on this machine" if args.gpu else "GPU cases not requested (--gpu)"
        skipped.append({"name": "sd15-gpu-*", "reason": reason})
    results = []
    for case in cases:
        print(f"[bench] {case['name']} ...", file=sys.stderr, flush=True)
        result = run_in_subprocess(case, args.timeout)
        results.append(result)
        line = result.get("error") or (f"{result['jobs_per_hour']} jobs/h, {result['seconds_per_frame']} s/frame "
                                       f"(setup {result['setup_s']} s, run {result['run_s']} s, ok {result['ok']})")
        print(f"[bench] {case['name']}: {line}", file=sys.stderr, flush=True)
    report = {"benchmark": "batch", "created_unix": int(time.time()), "machine": machine_info(PACKAGES),
              "cases": results, "skipped": skipped}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out)
    print(json.dumps(report, indent=2))
    return 1 if any("error" in r or r.get("ok") != r.get("jobs") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
