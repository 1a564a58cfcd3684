"""Preprocessing benchmark: today's path against the new one, and both Ray backends side by side,
on the sample videos, in one run.

    python benchmarks/preprocess.py --out benchmarks/results/preprocess-cpu.json [--repeats 2] [--gpu]

Each measurement runs in its own process pinned with ``sched_setaffinity`` (1 core for the plain
loops and the 1-worker runs, 2 cores for the 2-worker runs), every worker with one torch/OpenMP
thread, models loaded before the clock starts (``runtime.warm_start``). One round measures, in
this order:

* ``plain:<path>``: plan + every stage's ``process_batch`` per clip in one process; ``bare_s`` is
  the sum of the stage calls (the model work), ``plan_s`` the probing/splitting. Paths (config
  switches, see ``PATHS``): ``today`` (no keypoint reuse, ISNet at ``mask.size`` run by
  onnxruntime: the behaviour before the reuse and the int8 engine existed), ``new`` (the defaults:
  the pose stage reuses detect+track's keypoints, ISNet runs on the torch-int8 engine),
  ``fit_crop`` (the new path plus the opt-in crop-sized ISNet input) and ``fp32`` (the new path
  with the fp16 ISNet release, which runs as an fp32 graph on CPU); the last two in the first
  round only.
* ``<backend>:<workers>`` for ``ray-actors`` and ``ray-data`` with 1 and 2 workers per stage: the
  runner (new path) on a local cluster of that many CPUs.

Ratios are taken within a round (this kind of shared host changes speed by 2x from minute to
minute), then the median over rounds: ``speedup_new_vs_today`` (plain frames/s), per backend
``scaling_2v1`` (frames/s with 2 workers / 1) and ``overhead_ratio`` (1-worker wall time / the new
path's plain ``bare_s``; it includes planning, which ``bare_s`` does not). The first round keeps
the plain loops' outputs and compares them with today's (``quality``): clip statuses, keypoints
(bit-equal?) and mask IoU per frame. The load average before and after every measurement, and
how many cores the whole machine kept busy meanwhile, are recorded; ``load_warning`` says when
other work shared the machine. ``--gpu`` adds frames/s per GPU of real-size random-weight models.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_env import machine_info  # benchmarks/ is on sys.path when run as a script

SAMPLES = ["sports2d_demo.mp4", "pose2sim_cam01.mp4"]
OVERRIDES = ["decode.short_side=512", "split.clip_len=8", "split.min_len=8", "split.stride=16",
             "split.max_clips_per_video=4", "mask.size=512", "filter.people_rule='off'", "runtime.progress=false"]
PATHS = {
    "today": ["detect.keypoints=false", "pose.reuse_detect=false", "mask.fit_crop=false", "mask.engine=onnxruntime"],
    "new": [],
    "fit_crop": ["mask.fit_crop=true"],
    "fp32": ["mask.weights=isnet-fp16.onnx"],
}
ONCE = {"fit_crop", "fp32"}  # measured in the first round only (for its quality figures), to keep the run short
BACKENDS = ["ray-actors", "ray-data"]
PACKAGES = ["torch", "ray", "prefect", "ultralytics", "onnxruntime", "numpy", "decord", "av", "pyarrow",
            "opencv-python", "opencv-python-headless", "anycharv"]


EXTRA: list[str] = []  # --set overrides (e.g. a quick smoke run), after OVERRIDES


def _job(extra: list[str]):
    from anycharv.config import load_config
    from anycharv.preprocessing.runtime import PreprocessJob

    return load_config(PreprocessJob, None, OVERRIDES + EXTRA + extra)


def _sources() -> list[str]:
    from anycharv.assets import asset_path

    return [str(asset_path(name)) for name in SAMPLES]


def _pin(cores: int) -> None:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"


def measure_plain(path: str, keep: str | None) -> dict:
    """Models set up first, then plan + each stage per clip in a plain loop, timed per stage.
    With ``keep``, the clips' work folders stay there (for the quality comparison)."""
    _pin(1)
    import torch

    torch.set_num_threads(1)
    from anycharv.preprocessing.plan import plan_video
    from anycharv.preprocessing.stages import build_clip_stages

    cfg = _job(PATHS[path]).stage_config()
    stages = build_clip_stages(cfg)
    t0 = time.perf_counter()
    for stage in stages:
        stage.ensure_setup()
    setup_s = time.perf_counter() - t0
    torch.set_num_threads(1)
    per_stage = {s.name: 0.0 for s in stages}
    plan_s, frames, clips = 0.0, 0, []
    work = keep or tempfile.mkdtemp(prefix="bench-preprocess-")
    try:
        for source in _sources():
            t0 = time.perf_counter()
            tasks = plan_video(source, cfg, work)
            plan_s += time.perf_counter() - t0
            for task in tasks:
                os.makedirs(task.work_dir, exist_ok=True)
                frames += task.num_frames
                for stage in stages:
                    t0 = time.perf_counter()
                    task = stage.process_batch([task])[0]
                    per_stage[stage.name] += time.perf_counter() - t0
                clips.append({"source": os.path.basename(task.source), "start": task.start_frame,
                              "status": task.status, "reason": task.reason, "work_dir": task.work_dir,
                              "annotations": task.annotations})
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
        for stage in stages:
            stage.teardown()
    bare = sum(per_stage.values())
    return {"path": path, "overrides": PATHS[path], "stage_classes": {s.name: type(s).__name__ for s in stages},
            "setup_s": setup_s, "plan_s": plan_s, "bare_s": bare, "frames": frames, "clips": len(clips),
            "clips_ok": sum(c["status"] == "ok" for c in clips), "frames_per_s": frames / bare,
            "frames_per_s_incl_plan": frames / (bare + plan_s), "stage_s": per_stage,
            "stage_ms_per_frame": {k: 1000 * v / frames for k, v in per_stage.items()}, "clip_results": clips}


def measure_ray(backend: str, workers: int) -> dict:
    """The runner (new path) with ``workers`` actors per stage on a local cluster of that many CPUs."""
    _pin(workers)
    from anycharv.preprocessing.runner import run_pipeline

    job = _job([f"runtime.executor={backend}", f"runtime.num_workers={workers}", f"runtime.num_cpus={workers}",
                "runtime.threads_per_worker=1", "runtime.warm_start=true"])
    with tempfile.TemporaryDirectory() as out:
        summary = run_pipeline(_sources(), out, job.stage_config(), job.runtime)
    data = summary.to_dict()
    return {"backend": backend, "workers_per_stage": workers, "cores": workers, "init_s": data["init_s"],
            "setup_s": data["setup_s"], "wall_s": data["run_s"], "frames": data["frames_processed"],
            "clips": data["clips_processed"], "clips_ok": data["clips_ok"], "frames_per_s": data["frames_per_s"],
            "stage_busy_s": {s["name"]: s["busy_s"] for s in data["stages"]},
            "stage_cpus_per_worker": {s["name"]: s["cpus_per_worker"] for s in data["stages"]}}


def measure_gpu() -> dict:
    """Frames/s on one GPU of a real-size YOLO-seg (yolo11l-seg, random weights) and a DWPose-sized
    pose network (random weights; same input 384x288 and SimCC outputs as DWPose-l)."""
    import torch

    from anycharv.devices import pick_device, pick_dtype

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device on this machine; run with --gpu on a GPU host"}
    device = pick_device()
    dtype = pick_dtype(device)
    out: dict = {"device": torch.cuda.get_device_name(device), "dtype": str(dtype)}
    from ultralytics import YOLO

    seg = YOLO("yolo11l-seg.yaml").model.to(device=device, dtype=dtype).eval()
    out["yolo_seg"] = _gpu_rate(seg, torch.randn(16, 3, 640, 640, device=device, dtype=dtype), 16)
    out["yolo_seg"]["params_m"] = sum(p.numel() for p in seg.parameters()) / 1e6
    pose = _dwpose_sized().to(device=device, dtype=dtype).eval()
    out["dwpose_sized"] = _gpu_rate(pose, torch.randn(64, 3, 384, 288, device=device, dtype=dtype), 64)
    out["dwpose_sized"]["params_m"] = sum(p.numel() for p in pose.parameters()) / 1e6
    return out


def _gpu_rate(model, batch, n: int, iters: int = 20) -> dict:
    import torch

    with torch.inference_mode():
        for _ in range(3):
            model(batch)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            model(batch)
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"batch": n, "frames_per_s": n * iters / seconds}


def _dwpose_sized():
    """A CSP-style conv backbone (~55M parameters like DWPose-l's RTMPose-l) with SimCC heads."""
    from torch import nn

    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU(),
                             nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            chans = [64, 128, 256, 512, 1024]
            layers, cin = [], 3
            for i, c in enumerate(chans):
                layers += [block(cin, c, 2)] + [block(c, c, 1) for _ in range(1 if i < 2 else 2)]
                cin = c
            self.backbone = nn.Sequential(*layers)
            self.head = nn.Conv2d(1024, 133, 1)
            self.to_x = nn.Linear(12 * 9, 576)
            self.to_y = nn.Linear(12 * 9, 768)

        def forward(self, x):
            h = self.head(self.backbone(x)).flatten(2)
            return self.to_x(h), self.to_y(h)

    return Net()


# -- the parent: rounds of child processes, load bookkeeping, comparisons


def _busy_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _child(args: list[str]) -> dict:
    """Run one measurement in a fresh process (clean affinity, threads and Ray cluster), with the
    machine's load around it."""
    cmd = [sys.executable, __file__, "--measure", *args, *(f"--set={item}" for item in EXTRA)]
    load_before, ticks_before, t0 = os.getloadavg(), _busy_ticks(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0"))
    wall, ticks_after, load_after = time.perf_counter() - t0, _busy_ticks(), os.getloadavg()
    if done.returncode != 0:
        raise RuntimeError(f"measurement {args} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    busy = (ticks_after[0] - ticks_before[0]) / max(1, ticks_after[1] - ticks_before[1])
    result["machine_load"] = {"loadavg_1m_before": round(load_before[0], 2),
                              "loadavg_1m_after": round(load_after[0], 2),
                              "machine_busy_cores": round(busy * (os.cpu_count() or 1), 2),
                              "process_wall_s": round(wall, 1)}
    return result


def _iou(a, b) -> float:
    import numpy as np

    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def compare_outputs(reference: dict, other: dict) -> dict:
    """Statuses, keypoints and per-frame mask IoU of ``other``'s clips against ``reference``'s
    (the same clips: same source and start frame)."""
    import numpy as np

    from anycharv.preprocessing.annotations import load_clip_annotations

    ref = {(c["source"], c["start"]): c for c in reference["clip_results"]}
    statuses_equal, kp_clips, kp_equal, kp_max_diff, ious = True, 0, 0, 0.0, []
    for clip in other["clip_results"]:
        base = ref[(clip["source"], clip["start"])]
        statuses_equal &= (clip["status"], clip["reason"]) == (base["status"], base["reason"])
        names = {k: v for k, v in clip["annotations"].items() if k in ("keypoints", "masks")}
        mine = load_clip_annotations(clip["work_dir"], names)
        theirs = load_clip_annotations(base["work_dir"], {k: v for k, v in base["annotations"].items() if k in names})
        if "keypoints" in mine and "keypoints" in theirs:
            kp_clips += 1
            kp_equal += bool(np.array_equal(mine["keypoints"], theirs["keypoints"]))
            kp_max_diff = max(kp_max_diff, float(np.abs(mine["keypoints"] - theirs["keypoints"]).max()))
        if "masks" in mine and "masks" in theirs:
            for a, b in zip(mine["masks"], theirs["masks"]):
                if a.any() or b.any():
                    ious.append((clip["source"], _iou(a, b)))
    by_source = {}
    for source in sorted({s for s, _ in ious}):
        values = [v for s, v in ious if s == source]
        by_source[source] = {"frames": len(values), "mean": float(np.mean(values)), "min": float(np.min(values))}
    values = [v for _, v in ious]
    return {"statuses_equal": bool(statuses_equal), "keypoint_clips": kp_clips, "keypoint_clips_bit_equal": kp_equal,
            "keypoint_max_abs_diff": kp_max_diff,
            "mask_iou": {"frames": len(values), "mean": float(np.mean(values)) if values else None,
                         "min": float(np.min(values)) if values else None, "by_source": by_source},
            "targets": "statuses equal, keypoints equal, mask IoU mean >= 0.95 and no frame < 0.85"}


def _median(rounds: list[dict], fn) -> float:
    return statistics.median(fn(one) for one in rounds)


def _backend_verdict(rounds: list[dict], workers: int, noise: float = 0.05) -> str:
    """Which backend is faster with ``workers`` workers: only when every round agrees and the
    median difference exceeds ``noise``; otherwise 'within noise'."""
    ratios = [one[f"ray-actors:{workers}"]["frames_per_s"] / one[f"ray-data:{workers}"]["frames_per_s"]
              for one in rounds]
    med = statistics.median(ratios)
    if all(r > 1 for r in ratios) and med > 1 + noise:
        return f"ray-actors faster by {100 * (med - 1):.0f}% (median of {len(ratios)} rounds)"
    if all(r < 1 for r in ratios) and med < 1 - noise:
        return f"ray-data faster by {100 * (1 / med - 1):.0f}% (median of {len(ratios)} rounds)"
    return f"within noise (ray-actors / ray-data frames/s per round: {[round(r, 3) for r in ratios]})"


def _load_warning(rounds: list[dict], start_load: float, end_load: float) -> str | None:
    """Other work on the machine: a 1-minute load above 0.5 before the run started, or a
    1-core measurement during which the machine kept clearly more than one core busy."""
    notes = []
    if start_load > 0.5:
        notes.append(f"1-minute load average {start_load:.2f} before the run started")
    for r, one in enumerate(rounds, 1):
        for name, m in one.items():
            if isinstance(m, dict) and "machine_load" in m and m.get("cores", 1) == 1 \
                    and m["machine_load"]["machine_busy_cores"] > 1.3:
                notes.append(f"round {r} {name}: {m['machine_load']['machine_busy_cores']} cores busy on a 1-core run")
    if end_load > (os.cpu_count() or 1) + 1:
        notes.append(f"1-minute load average {end_load:.2f} at the end")
    return "machine was loaded: " + "; ".join(notes) if notes else None


def run_rounds(repeats: int, keep_root: str) -> list[dict]:
    rounds = []
    for r in range(repeats):
        one: dict = {}
        for path in PATHS if r == 0 else [p for p in PATHS if p not in ONCE]:
            print(f"round {r + 1}/{repeats}: plain {path} ...", file=sys.stderr, flush=True)
            keep = os.path.join(keep_root, path) if r == 0 else None
            one[f"plain:{path}"] = _child(["plain", "--path", path] + (["--keep", keep] if keep else []))
        for backend in BACKENDS:
            for workers in (1, 2):
                print(f"round {r + 1}/{repeats}: {backend} x{workers} ...", file=sys.stderr, flush=True)
                one[f"{backend}:{workers}"] = _child(["ray", "--backend", backend, "--workers", str(workers)])
        rounds.append(one)
    return rounds


def summarize(rounds: list[dict]) -> dict:
    today, new = "plain:today", "plain:new"
    out: dict = {
        "speedup_new_vs_today": _median(rounds, lambda o: o[new]["frames_per_s"] / o[today]["frames_per_s"]),
        "speedup_new_vs_today_incl_plan": _median(
            rounds, lambda o: o[new]["frames_per_s_incl_plan"] / o[today]["frames_per_s_incl_plan"]),
        **{f"speedup_{p}_vs_today": _median(
            rounds[:1], lambda o, p=p: o[f"plain:{p}"]["frames_per_s"] / o[today]["frames_per_s"]) for p in ONCE},
        "plain_frames_per_s": {p: _median(rounds[:1] if p in ONCE else rounds,
                                          lambda o, p=p: o[f"plain:{p}"]["frames_per_s"]) for p in PATHS},
        "stage_ms_per_frame": {p: {s: _median(rounds[:1] if p in ONCE else rounds,
                                              lambda o, p=p, s=s: o[f"plain:{p}"]["stage_ms_per_frame"][s])
                                   for s in rounds[0][f"plain:{p}"]["stage_ms_per_frame"]} for p in PATHS},
        "backends": {},
    }
    for backend in BACKENDS:
        one, two = f"{backend}:1", f"{backend}:2"
        out["backends"][backend] = {
            "frames_per_s_1_worker_1_core": _median(rounds, lambda o: o[one]["frames_per_s"]),
            "frames_per_s_2_workers_2_cores": _median(rounds, lambda o: o[two]["frames_per_s"]),
            "scaling_2v1": _median(rounds, lambda o: o[two]["frames_per_s"] / o[one]["frames_per_s"]),
            "overhead_ratio": _median(rounds, lambda o: o[one]["wall_s"] / o[new]["bare_s"]),
            "init_s": _median(rounds, lambda o: o[one]["init_s"]),
            "clips_ok": [o[one]["clips_ok"] for o in rounds] + [o[two]["clips_ok"] for o in rounds],
        }
    out["faster_backend"] = {"1_worker": _backend_verdict(rounds, 1), "2_workers": _backend_verdict(rounds, 2)}
    out["targets"] = {"speedup_new_vs_today": ">= 1.5", "scaling_2v1": ">= 1.7", "overhead_ratio": "<= 1.15"}
    return out


def _strip_paths(rounds: list[dict]) -> None:
    """Drop the per-clip work folders from what is saved (temporary paths)."""
    for one in rounds:
        for m in one.values():
            for clip in m.get("clip_results", []) if isinstance(m, dict) else []:
                clip.pop("work_dir", None)
                clip.pop("annotations", None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=False, help="JSON file to write")
    parser.add_argument("--gpu", action="store_true", help="also measure frames/s per GPU (skipped without CUDA)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds of every measurement")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every measurement (e.g. a quick smoke run)")
    parser.add_argument("--measure", choices=["plain", "ray", "gpu"], help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=list(PATHS), default="new", help=argparse.SUPPRESS)
    parser.add_argument("--keep", help=argparse.SUPPRESS)
    parser.add_argument("--backend", choices=BACKENDS, default="ray-actors", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    EXTRA[:] = args.set
    if args.measure:
        fn = {"plain": lambda: measure_plain(args.path, args.keep),
              "ray": lambda: measure_ray(args.backend, args.workers), "gpu": measure_gpu}[args.measure]
        print(json.dumps(fn()))
        return 0
    if not args.out:
        parser.error("--out is required")
    if len(os.sched_getaffinity(0)) < 2:
        print("warning: fewer than 2 cores: the 2-worker runs cannot scale", file=sys.stderr)
    start_load, started = os.getloadavg()[0], time.perf_counter()
    result = {"benchmark": "preprocess", "config_overrides": OVERRIDES + EXTRA, "paths": PATHS, "samples": SAMPLES,
              "machine": machine_info(PACKAGES)}
    keep_root = tempfile.mkdtemp(prefix="bench-preprocess-keep-")
    try:
        rounds = run_rounds(args.repeats, keep_root)
        result["quality_vs_today"] = {p: compare_outputs(rounds[0]["plain:today"], rounds[0][f"plain:{p}"])
                                      for p in PATHS if p != "today"}
    finally:
        shutil.rmtree(keep_root, ignore_errors=True)
    _strip_paths(rounds)
    result.update(summarize(rounds))
    end_load = os.getloadavg()[0]
    result["load"] = {"loadavg_1m_at_start": round(start_load, 2), "loadavg_1m_at_end": round(end_load, 2),
                      "total_s": round(time.perf_counter() - started, 1)}
    result["load_warning"] = _load_warning(rounds, start_load, end_load)
    result["rounds"] = rounds
    result["gpu"] = _child(["gpu"]) if args.gpu else {"skipped": "not requested (--gpu)"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    keys = ("speedup_new_vs_today", "speedup_fit_crop_vs_today", "speedup_fp32_vs_today", "plain_frames_per_s",
            "backends", "faster_backend",
            "quality_vs_today", "load_warning")
    print(json.dumps({k: result[k] for k in keys}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
