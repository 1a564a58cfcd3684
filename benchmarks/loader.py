"""Training-data benchmark: the stage-1 loader against bare tar reading, a training step fed from the
latent cache against one that encodes its inputs on the fly, and what the cache job costs and stores.

    python benchmarks/loader.py --out benchmarks/results/loader-cpu.json [--gpu]

Every figure is measured in its own child process (fresh threads, affinity and memory) and saved
with the inputs that produced it:

* ``loader_vs_raw_tar``: a synthetic preprocessing output (real frames of the sample videos, a
  drawn character: box, ellipse mask, DWPose-layout skeleton; ``build_prep_output``) goes through
  the real cache job (``run_cache``, tiny-preset encoders: the latents have the real 4 x H/8 x W/8
  shape) into a square bucket. Then, with one thread, ``Stage1VideoDataset`` (exact mode: reads the
  members it needs by offset, decodes them and renders the pose images; resampled mode: webdataset
  streaming of the same shards) against a bare ``tarfile`` loop that reads every member's bytes
  of the same shards. Alternating within each round; the figure is the median of the per-round
  ratios of samples/s (target >= 0.8).
* ``cached_vs_onthefly_speedup``: one image-level stage-1 training step (reference UNet at
  timestep 0 fills the reference bank, pose guider, denoising UNet on ``[noisy, masked, mask]``,
  v-prediction MSE, backward through all three) with SD-1.5-size random networks, fed from cached
  latents, against the same step computing the target/masked/reference latents (SD-size VAE)
  and the CLIP embedding (SD-size image encoder) from pixels first. One torch thread by default
  (with two, a neighbour's job on a 2-core host stalls every OpenMP barrier and step times swing
  4x); one warm-up step, then rounds alternating the order; the figure is the median of the
  per-round ratios of wall times (target >= 1.4), with the CPU-time ratio next to it.
* ``bytes_per_sample`` and ``clips_per_s``: the cache job at 512x512 on the CPU with SD-size
  random VAE/CLIP weights (saved with ``save_pretrained``, passed as ``EncoderSource(vae=...,
  image_encoder=...)``), executor ``local``, one short clip in a reduced config (fewer mask
  variants and references: each 512x512 VAE image costs seconds here). The bytes of a sample
  depend only on shapes and dtypes, so the default-config byte count comes from small encoders
  with the SD-size output shapes on the same clip (checked against the SD-size run's own bytes).
* ``gpu`` (``--gpu``): the same cache job on one GPU, default config, 8 clips of 24 frames, after a
  warm-up run (skipped without CUDA).

The load average before and after each child, how many cores the machine kept busy meanwhile,
and every raw timing are in ``raw``; ``load_warning`` says when other work shared the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_env import machine_info  # benchmarks/ is on sys.path when run as a script

SAMPLES = ["pose2sim_cam01.mp4", "sports2d_demo.mp4"]
PACKAGES = ["torch", "diffusers", "transformers", "numpy", "pyarrow", "webdataset", "opencv-python",
            "opencv-python-headless", "decord", "av", "pydantic"]
LAYOUT = "dwpose134"  # the full DWPose layout: body, feet, face and hands are drawn (the dearest render)

# ----------------------------------------------------------------------------- synthetic inputs

# OpenPose-18 body joints as (u, v) fractions of the character's box
BODY_TEMPLATE = [
    (0.50, 0.08), (0.50, 0.18), (0.30, 0.20), (0.22, 0.35), (0.18, 0.50), (0.70, 0.20), (0.78, 0.35),
    (0.82, 0.50), (0.40, 0.52), (0.38, 0.72), (0.37, 0.93), (0.60, 0.52), (0.62, 0.72), (0.63, 0.93),
    (0.46, 0.06), (0.54, 0.06), (0.42, 0.07), (0.58, 0.07),
]


def _hand(wrist, size: float, side: float):
    """21 hand points: the wrist, then 5 fingers of 4 joints fanned out away from the body."""
    points = [wrist]
    for f in range(5):
        angle = math.radians(60 + 15 * f) * side
        for j in range(1, 5):
            r = size * (0.3 + 0.18 * j)
            points.append((wrist[0] + side * abs(math.cos(angle)) * r * 0.6, wrist[1] + math.sin(abs(angle)) * r))
    return points


def synthetic_person(num_frames: int, width: int, height: int, seed: int):
    """(boxes (T,4) float32, keypoints (T,134,3) float32 in the dwpose134 layout, masks (T,H,W) bool)
    of one character that sways a little from frame to frame, in pixels of a ``width`` x ``height`` frame."""
    import numpy as np

    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * math.pi)
    bh = 0.75 * height
    bw = min(0.4 * bh, 0.8 * width)
    boxes = np.zeros((num_frames, 4), np.float32)
    keypoints = np.zeros((num_frames, 134, 3), np.float32)
    masks = np.zeros((num_frames, height, width), bool)
    ys, xs = np.mgrid[0:height, 0:width]
    for t in range(num_frames):
        swing = math.sin(phase + 2 * math.pi * t / 24)
        cx = width / 2 + 0.05 * width * swing
        cy = 0.55 * height
        x0, y0 = cx - bw / 2, cy - bh / 2
        boxes[t] = [x0, y0, x0 + bw, y0 + bh]
        body = [(x0 + u * bw, y0 + v * bh) for u, v in BODY_TEMPLATE]
        for j in (4, 7):  # wrists wave
            body[j] = (body[j][0], body[j][1] - 0.08 * bh * swing)
        (rax, ray), (lax, lay) = body[10], body[13]
        feet = [(ax + side * du * bw, ay + dv * bh) for (ax, ay), side in (((lax, lay), 1), ((rax, ray), -1))
                for du, dv in ((0.04, 0.03), (0.08, 0.03), (-0.02, 0.02))]
        nx, ny = body[0]
        face = [(nx + 0.12 * bw * math.cos(a), ny + 0.04 * bh * math.sin(a))
                for a in np.linspace(0, 2 * math.pi, 68, endpoint=False)]
        points = body + feet + face + _hand(body[7], 0.1 * bw, 1.0) + _hand(body[4], 0.1 * bw, -1.0)
        keypoints[t, :, :2] = np.asarray(points, np.float32)
        keypoints[t, :, 2] = 0.9
        masks[t] = ((xs - cx) / (bw / 2)) ** 2 + ((ys - cy) / (bh / 2)) ** 2 <= 1.0
    return boxes, keypoints, masks


def build_prep_output(root: str | os.PathLike, videos: list[str], clips_per_video: int, clip_len: int,
                      short_side: int = 512) -> Path:
    """A preprocessing output as ``latent_cache.plan.read_ok_clips`` reads it: ``manifest/clips.parquet``
    (ok clip rows with the ``ann_*`` paths and ``stat_keypoint_layout``) and ``clips/<id>/`` with
    boxes.npy, keypoints.npy and masks.npz. Clips are consecutive ``clip_len``-frame ranges of the
    sample ``videos`` at the preprocessing size (short side ``short_side``); the character is drawn."""
    import pyarrow.parquet as pq

    from anycharv.assets import asset_path
    from anycharv.hashing import sha256_file_cached
    from anycharv.preprocessing.annotations import save_array, save_masks
    from anycharv.preprocessing.manifest import rows_to_table
    from anycharv.preprocessing.video_io import probe_video, processing_size

    root = Path(root)
    rows = []
    for name in videos:
        source = str(asset_path(name))
        info = probe_video(source)
        digest = sha256_file_cached(source)
        width, height = processing_size(info.width, info.height, short_side)
        for i in range(min(clips_per_video, info.num_frames // clip_len)):
            start, end = i * clip_len, (i + 1) * clip_len
            clip_id = hashlib.sha256(f"{digest}:{start}:{end}:synthetic".encode()).hexdigest()[:16]
            clip_dir = root / "clips" / clip_id
            clip_dir.mkdir(parents=True, exist_ok=True)
            boxes, keypoints, masks = synthetic_person(clip_len, width, height, seed=len(rows))
            files = {"boxes": save_array(clip_dir, "boxes", boxes),
                     "keypoints": save_array(clip_dir, "keypoints", keypoints), "masks": save_masks(clip_dir, masks)}
            rows.append({
                "clip_id": clip_id, "kind": "clip", "source": source, "source_digest": digest,
                "config_hash": "synthetic", "status": "ok", "reason": "", "detail": "", "start_frame": start,
                "end_frame": end, "num_frames": clip_len, "fps": float(info.fps), "width": width, "height": height,
                "src_width": info.width, "src_height": info.height, "track_id": 1,
                "annotation_dir": f"clips/{clip_id}", "stat_keypoint_layout": LAYOUT,
                **{f"ann_{k}": f"clips/{clip_id}/{v}" for k, v in files.items()},
            })
    (root / "manifest").mkdir(parents=True, exist_ok=True)
    pq.write_table(rows_to_table(rows), root / "manifest" / "clips.parquet")
    return root


def cache_job(bucket: int, frames: int, **cache):
    """A ``CacheJob`` for one square bucket, every clip in the train split, the local executor on the CPU
    unless ``device`` says otherwise."""
    from anycharv.latent_cache.config import CacheConfig, CacheJob, CacheRuntime

    runtime = {k: cache.pop(k) for k in ("device", "threads_per_worker", "vae_chunk") if k in cache}
    runtime.setdefault("device", "cpu")
    return CacheJob(cache=CacheConfig(buckets=[(bucket, bucket)], max_frames=frames, val_fraction=0.0, **cache),
                    runtime=CacheRuntime(executor="local", progress=False, **runtime))


def _peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


# ----------------------------------------------------------------------------- 1. loader vs raw tar


def _raw_tar_pass(shards: list[str]) -> tuple[int, int]:
    """(samples, bytes): every member of every shard read with ``tarfile``, nothing decoded."""
    import tarfile

    samples = size = 0
    for shard in shards:
        keys = set()
        with tarfile.open(shard, mode="r:") as tar:
            for member in tar:
                if member.isfile():
                    size += len(tar.extractfile(member).read())
                    keys.add(member.name.partition(".")[0])
        samples += len(keys)
    return samples, size


def _timed_passes(run_pass, min_s: float) -> dict:
    """Whole passes until ``min_s`` has gone by: samples, seconds, samples/s."""
    samples, passes, t0 = 0, 0, time.perf_counter()
    while True:
        samples += run_pass(passes)
        passes += 1
        seconds = time.perf_counter() - t0
        if seconds >= min_s:
            return {"samples": samples, "passes": passes, "seconds": round(seconds, 4),
                    "samples_per_s": samples / seconds}


def measure_loader(p: dict) -> dict:
    import cv2
    import torch

    from anycharv.datasets.shard_index import read_index
    from anycharv.datasets.stage1 import Stage1VideoDataset
    from anycharv.latent_cache.config import EncoderSource
    from anycharv.latent_cache.runner import run_cache

    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as work:
        t0 = time.perf_counter()
        prep = build_prep_output(Path(work) / "prep", SAMPLES, p["clips_per_video"], p["clip_frames"])
        out["prep_build_s"] = round(time.perf_counter() - t0, 2)
        job = cache_job(p["bucket"], p["clip_frames"], samples_per_shard=p["samples_per_shard"],
                        threads_per_worker=len(os.sched_getaffinity(0)))
        cache = Path(work) / "cache"
        summary = run_cache(job, str(prep), str(cache), EncoderSource(preset="tiny"))
        out["cache_job"] = {"config": job.cache.model_dump(mode="json"), "encoders": "preset tiny",
                            "samples": summary.samples, "shards": summary.shards, "frames": summary.frames,
                            "bytes_per_sample": summary.bytes_per_sample, "total_s": summary.total_s,
                            "rejected": summary.rejected}
        if not summary.samples:
            raise RuntimeError(f"the cache job wrote no samples: {summary}")
        shards = sorted({str(s.shard) for s in read_index(cache / "shards")})
        out["shard_bytes"] = [os.path.getsize(s) for s in shards]

        # the measurement: one thread everywhere (a DataLoader worker's situation); not pinned, so that
        # the scheduler can move it off a core another job holds on this shared machine
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        window = dict(num_frames=p["window"], sample_rate=1)
        exact = Stage1VideoDataset(cache, "train", mode="exact", uneven="none", **window)
        count = len(exact.samples)
        resampled = Stage1VideoDataset(cache, "train", mode="resampled", samples_per_epoch=count, **window)

        def loader_pass(dataset):
            def run(epoch: int) -> int:
                dataset.set_epoch(epoch)
                n = 0
                for item in dataset:
                    n += 1
                    last = item
                shapes[dataset.mode] = {k: list(v.shape) for k, v in last.items() if hasattr(v, "shape")}
                return n
            return run

        shapes: dict = {}
        readers = {"raw_tar": lambda _: _raw_tar_pass(shards)[0], "exact": loader_pass(exact),
                   "resampled": loader_pass(resampled)}
        out["raw_tar_bytes_per_pass"] = _raw_tar_pass(shards)[1]
        for run in readers.values():  # warm the page cache, imports and the shard handles
            run(0)
        rounds = []
        names = list(readers)
        for r in range(p["rounds"]):
            order = names if r % 2 == 0 else names[::-1]
            one = {"order": order}
            for name in order:
                one[name] = _timed_passes(readers[name], p["min_s"])
            one["ratio_exact"] = one["exact"]["samples_per_s"] / one["raw_tar"]["samples_per_s"]
            one["ratio_resampled"] = one["resampled"]["samples_per_s"] / one["raw_tar"]["samples_per_s"]
            rounds.append(one)
        out["sample_shapes"] = shapes
        out["skipped_samples"] = {"exact": exact.stats, "resampled": resampled.stats}
        out["rounds"] = rounds
        out["breakdown_ms_per_sample"] = _loader_breakdown(exact, p["window"])
    return out


def _loader_breakdown(dataset, window: int) -> dict:
    """Where the exact-mode reader's time goes, in ms per sample (one pass over the samples each):
    the whole ``_build`` of a sample, then its parts: reading the members' bytes by offset, decoding
    them (.npy/.json), the dataset's own ``pose_frames`` (rendering + float32 layout), the render
    alone in the cached layout and, for comparison, a body-only (``openpose18``) render."""
    import numpy as np

    from anycharv.datasets import schema
    from anycharv.datasets.codec import decode
    from anycharv.datasets.stage1 import pose_frames
    from anycharv.model.pose_render import render_pose

    fields = [schema.META, schema.LATENTS, schema.LATENTS_STD, schema.KEYPOINTS, schema.REF_LATENTS,
              schema.REF_CLIP, schema.masked_latents(0), schema.mask(0)]
    reader = dataset.reader
    spent = dict.fromkeys(("build", "read_members", "decode", "pose_frames", "render_pose",
                           "render_pose_openpose18"), 0.0)
    for i, sample in enumerate(dataset.samples):
        t0 = time.perf_counter()
        dataset._build(reader.view(sample), np.random.default_rng(i))
        t1 = time.perf_counter()
        raw = {f: reader.read(sample, f) for f in fields}
        t2 = time.perf_counter()
        values = {f: decode(f, b) for f, b in raw.items()}
        t3 = time.perf_counter()
        view = reader.view(sample)
        meta = view.meta()
        pose_frames(view, meta, np.arange(window))
        t4 = time.perf_counter()
        keypoints, h, w = values[schema.KEYPOINTS], meta["height"], meta["width"]
        for t in range(window):
            render_pose(keypoints[t], meta["keypoint_layout"], h, w)
        t5 = time.perf_counter()
        for t in range(window):
            render_pose(keypoints[t], "openpose18", h, w)
        t6 = time.perf_counter()
        for key, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
            spent[key] += seconds
    reader.close()
    n = len(dataset.samples)
    out = {k: round(1000 * v / n, 3) for k, v in spent.items()}
    out["other_in_build"] = round(out["build"] - out["read_members"] - out["decode"] - out["pose_frames"], 3)
    out["bytes_read_per_sample"] = int(np.mean([sum(s.members[f][1] for f in fields) for s in dataset.samples]))
    out["note"] = ("fine-mask variant 0, posterior std included; pose_frames includes its own keypoints read; "
                   "other_in_build: the posterior noise, the float32 casts/copies of the latents, the mask "
                   "variant's members when it is an augmented one")
    return out


# ----------------------------------------------------------------------------- 2. cached vs on-the-fly step


def _step_pixels(size: int) -> dict:
    """uint8 pixels of one training sample at ``size`` x ``size``: a target frame and a reference
    frame of a sample video (square crop), the fine mask, the masked frame, the reference with the
    background zeroed, and the pose image."""
    import cv2
    import numpy as np

    from anycharv.assets import asset_path
    from anycharv.model.pose_render import render_pose
    from anycharv.preprocessing.video_io import read_frames

    frames = read_frames(str(asset_path(SAMPLES[0])), 10, 41)
    h, w = frames.shape[1:3]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    target, reference = (cv2.resize(frames[i, y0:y0 + side, x0:x0 + side], (size, size),
                                    interpolation=cv2.INTER_AREA) for i in (30, 0))
    _, keypoints, masks = synthetic_person(1, size, size, seed=0)
    mask = masks[0]
    return {"target": target, "reference": np.where(mask[..., None], reference, 0).astype(np.uint8),
            "masked": np.where(mask[..., None], 0, target).astype(np.uint8), "mask": mask,
            "pose": render_pose(keypoints[0], LAYOUT, size, size)}


def measure_step(p: dict) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from anycharv.model.denoising_unet import DenoisingUNet3D
    from anycharv.model.encoders import OFFICIAL_LATENT_SCALE
    from anycharv.model.image_processing import clip_pixel_values, masks_to_latent, pixels_to_tensor
    from anycharv.model.pose_guider import PoseGuider
    from anycharv.model.reference_attention import ReferenceAttentionControl
    from anycharv.model.reference_unet import ReferenceUNet2D
    from anycharv.model.scheduling import make_scheduler
    from anycharv.model.sd15 import (
        SD15_DENOISING_UNET,
        SD15_IMAGE_ENCODER,
        SD15_POSE_GUIDER,
        SD15_REFERENCE_UNET,
        SD15_VAE,
    )

    size, lat = p["size"], p["size"] // 8
    torch.set_num_threads(p["threads"])
    torch.manual_seed(0)
    t0 = time.perf_counter()
    reference_unet = ReferenceUNet2D(**SD15_REFERENCE_UNET)
    denoising_unet = DenoisingUNet3D(**{**SD15_DENOISING_UNET, "use_motion_module": p["motion_module"]})
    pose_guider = PoseGuider(**SD15_POSE_GUIDER)
    vae = AutoencoderKL(**SD15_VAE).eval().requires_grad_(False)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**SD15_IMAGE_ENCODER)).eval().requires_grad_(False)
    build_s = time.perf_counter() - t0
    trained = [reference_unet, denoising_unet, pose_guider]
    params = [q for m in trained for q in m.train().parameters()]

    def drop_grad(param):  # stands in for a fused optimizer step: frees each gradient once it is complete
        param.grad = None

    for q in params:
        q.register_post_accumulate_grad_hook(drop_grad)
    millions = {name: round(sum(q.numel() for q in m.parameters()) / 1e6, 2) for name, m in
                (("reference_unet", reference_unet), ("denoising_unet", denoising_unet), ("pose_guider", pose_guider),
                 ("vae", vae), ("image_encoder", image_encoder))}
    processor = CLIPImageProcessor()
    scheduler = make_scheduler()
    control = ReferenceAttentionControl(reference_unet, denoising_unet, do_classifier_free_guidance=False,
                                        bank_dtype=None)  # training keeps the bank in fp32 with its graph
    px = _step_pixels(size)
    pose = torch.from_numpy(px["pose"]).permute(2, 0, 1).float().div(255)[None, :, None]  # (1,3,1,H,W)
    gen = torch.Generator().manual_seed(1)

    @torch.no_grad()
    def encode(pixels: dict) -> dict:
        """What the cache stores for this sample, from its pixels (the cache job's computation)."""
        x = pixels_to_tensor(np.stack([pixels["target"], pixels["masked"], pixels["reference"]]), signed=True)
        dist = vae.encode(x).latent_dist
        mean, std = dist.mean * OFFICIAL_LATENT_SCALE, dist.std * OFFICIAL_LATENT_SCALE
        clip = image_encoder(clip_pixel_values(pixels["reference"], processor)).image_embeds[:, None]
        mask = masks_to_latent(pixels["mask"][None].astype(np.uint8) * 255, lat, lat, mode="nearest")
        return {"mean": mean[0:1, :, None], "std": std[0:1, :, None], "masked": mean[1:2, :, None],
                "ref": mean[2:3], "clip": clip, "mask": (mask > 0.5).float()}

    def train_step(inputs: dict) -> float:
        latent = inputs["mean"] + inputs["std"] * torch.randn(inputs["mean"].shape, generator=gen)
        control.clear()
        reference_unet(inputs["ref"], torch.zeros(1, dtype=torch.long), encoder_hidden_states=inputs["clip"])
        control.update()
        noise = torch.randn(latent.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (1,), generator=gen)
        noisy = scheduler.add_noise(latent, noise, t)
        target = scheduler.get_velocity(latent, noise, t)
        pred = denoising_unet(torch.cat([noisy, inputs["masked"], inputs["mask"]], dim=1), t,
                              encoder_hidden_states=inputs["clip"], pose_cond_fea=pose_guider(pose))
        loss = F.mse_loss(pred.float(), target.float())
        loss.backward()
        control.clear()
        return float(loss.detach())

    cached = encode(px)  # the cache: computed once, outside the clock

    def run(mode: str) -> dict:
        c0, t0 = time.process_time(), time.perf_counter()
        inputs = encode(px) if mode == "onthefly" else cached
        c1, t1 = time.process_time(), time.perf_counter()
        loss = train_step(inputs)
        c2, t2 = time.process_time(), time.perf_counter()
        return {"step_s": round(t2 - t0, 3), "encode_s": round(t1 - t0, 3), "train_s": round(t2 - t1, 3),
                "step_cpu_s": round(c2 - c0, 3), "encode_cpu_s": round(c1 - c0, 3), "loss": round(loss, 5),
                "loadavg_1m": round(os.getloadavg()[0], 2)}

    warmup = run("onthefly")
    rounds = []
    for r in range(p["rounds"]):
        order = ["cached", "onthefly"] if r % 2 == 0 else ["onthefly", "cached"]
        one: dict = {"order": order}
        for mode in order:
            one[mode] = run(mode)
        one["ratio"] = one["onthefly"]["step_s"] / one["cached"]["step_s"]
        one["ratio_cpu_time"] = one["onthefly"]["step_cpu_s"] / one["cached"]["step_cpu_s"]
        rounds.append(one)
    control.remove()
    return {"size": size, "latent_size": lat, "frames": 1, "motion_module": p["motion_module"],
            "params_million": millions, "build_s": round(build_s, 1), "torch_threads": torch.get_num_threads(),
            "cached_inputs_shapes": {k: list(v.shape) for k, v in cached.items()}, "warmup": warmup,
            "rounds": rounds, "peak_rss_gib": _peak_rss_gib()}


# ----------------------------------------------------------------------------- 3./4. the cache job at 512


def _save_sd_encoders(folder: Path, seed: int = 0) -> dict:
    """SD-size VAE and CLIP image encoder with random weights, saved as ``folder/vae`` and
    ``folder/image_encoder`` (``save_pretrained``)."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from anycharv.model.sd15 import SD15_IMAGE_ENCODER, SD15_VAE

    torch.manual_seed(seed)
    AutoencoderKL(**SD15_VAE).save_pretrained(folder / "vae")
    CLIPVisionModelWithProjection(CLIPVisionConfig(**SD15_IMAGE_ENCODER)).save_pretrained(folder / "image_encoder")
    return {"vae": str(folder / "vae"), "image_encoder": str(folder / "image_encoder")}


def _save_shape_twins(folder: Path, seed: int = 0) -> dict:
    """Small encoders whose outputs have the SD-size shapes (the tiny preset's VAE: 4 x H/8 x W/8
    latents; a 2-layer CLIP with the 768-d projection), saved like ``_save_sd_encoders``: a cache
    made with them has the same bytes as one made with the SD-size encoders, in seconds."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from anycharv.model.sd15 import SD15_IMAGE_ENCODER
    from anycharv.model.tiny import TINY_IMAGE_ENCODER, TINY_VAE

    torch.manual_seed(seed)
    AutoencoderKL(**TINY_VAE).save_pretrained(folder / "vae")
    config = CLIPVisionConfig(**{**TINY_IMAGE_ENCODER, "projection_dim": SD15_IMAGE_ENCODER["projection_dim"]})
    CLIPVisionModelWithProjection(config).save_pretrained(folder / "image_encoder")
    return {"vae": str(folder / "vae"), "image_encoder": str(folder / "image_encoder")}


def _encoder_load_s(paths: dict, device: str) -> float:
    """Seconds to load the saved encoders onto ``device`` (what the cache stage's setup does)."""
    import torch

    from anycharv.model.components import load_encoders

    t0 = time.perf_counter()
    encoders = load_encoders(vae=paths["vae"], image_encoder=paths["image_encoder"])
    for model in encoders.values():
        model.to(device)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _summary_figures(summary, job) -> dict:
    return {"config": job.cache.model_dump(mode="json"),
            "runtime": job.runtime.model_dump(mode="json", include={"executor", "device", "batch_size", "vae_chunk",
                                                                   "threads_per_worker"}),
            "clips": summary.encoded, "frames": summary.frames, "samples": summary.samples,
            "rejected": summary.rejected, "bytes_per_sample": summary.bytes_per_sample,
            "encode_s": summary.encode_s, "total_s": summary.total_s, "clips_per_s": summary.clips_per_s,
            "frames_per_s": summary.frames_per_s,
            # the summary rounds to 3 decimals, too coarse for the CPU; the same quotients unrounded
            "clips_per_s_unrounded": summary.encoded / summary.encode_s if summary.encode_s else None,
            "frames_per_s_unrounded": summary.frames / summary.encode_s if summary.encode_s else None}


def _vae_images_per_clip(frames: int, variants: int, references: int) -> int:
    """Images the cache job sends through the VAE per clip: frames, each mask variant's masked
    frames (the fine mask included), references."""
    return frames * (2 + variants) + min(references, frames)


def measure_cache(p: dict) -> dict:
    """The cache job with SD-size random encoders on ``p["device"]``; on the CPU also the byte counts
    of the default config from shape twins of the encoders (``_twin_bytes``)."""
    import torch

    from anycharv.latent_cache.config import EncoderSource
    from anycharv.latent_cache.runner import run_cache

    device = p["device"]
    if device == "cuda" and not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    threads = len(os.sched_getaffinity(0)) if device == "cpu" else None
    out: dict = {"device": device}
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as work:
        work = Path(work)
        prep = build_prep_output(work / "prep", SAMPLES[: p["videos"]], p["clips_per_video"], p["frames"])
        t0 = time.perf_counter()
        paths = _save_sd_encoders(work / "weights")
        out["encoders_build_save_s"] = round(time.perf_counter() - t0, 1)
        out["encoder_load_s"] = round(_encoder_load_s(paths, device), 2)
        source = EncoderSource(vae=paths["vae"], image_encoder=paths["image_encoder"])
        extra = {"device": device, "threads_per_worker": threads}
        reduced = dict(mask_variants=p["variants"], num_references=p["references"])
        if device == "cuda":  # warm-up run (CUDA context, kernels) on a throw-away output
            warm = build_prep_output(work / "prep-warm", SAMPLES[:1], 1, 8)
            run_cache(cache_job(512, 8, **reduced, **extra), str(warm), str(work / "cache-warm"), source)
        job = cache_job(512, p["frames"], **reduced, **extra)
        summary = run_cache(job, str(prep), str(work / "cache-sd"), source)
        sd = _summary_figures(summary, job)
        images = _vae_images_per_clip(p["frames"], p["variants"], p["references"])
        busy = max(summary.encode_s - out["encoder_load_s"], 1e-9)
        sd["vae_images_per_clip"] = images
        sd["clip_embeds_per_clip"] = min(p["references"], p["frames"])
        sd["clips_per_s_excl_setup"] = round(summary.encoded / busy, 4)
        sd["s_per_vae_image_upper_bound"] = round(busy / max(summary.encoded * images, 1), 3)
        if device == "cuda":
            sd["dtype"] = "float32 (EncodeStage moves the encoders to the GPU without casting them)"
            sd["gpu"] = torch.cuda.get_device_name(0)
        out["sd_size"] = sd
        d = cache_job(512, p["frames"]).cache
        default_images = _vae_images_per_clip(p["frames"], d.mask_variants, d.num_references)
        out["default_config_estimate"] = {
            "vae_images_per_clip": default_images,
            "clips_per_s": round(1.0 / (sd["s_per_vae_image_upper_bound"] * default_images), 4),
            "how": "s_per_vae_image_upper_bound (the measured run's encode time without the encoder load, all of it "
                   "charged to the VAE) x the VAE images a default-config clip needs",
        }
        if device == "cpu":
            out.update(_twin_bytes(work, prep, p["frames"], reduced, summary.bytes_per_sample))
    out["torch_threads"] = threads
    out["peak_rss_gib"] = _peak_rss_gib()
    return out


def _twin_bytes(work: Path, prep: Path, frames: int, reduced: dict, sd_bytes: float) -> dict:
    """Byte counts of the same clips through small encoders with the SD-size output shapes, in the
    measured run's config (a check: the bytes must match) and in the default config."""
    from anycharv.latent_cache.config import EncoderSource
    from anycharv.latent_cache.runner import run_cache

    out = {}
    twins = _save_shape_twins(work / "twins")
    twin_source = EncoderSource(vae=twins["vae"], image_encoder=twins["image_encoder"])
    twin_reduced_job, default_job = cache_job(512, frames, **reduced), cache_job(512, frames)
    twin_reduced = run_cache(twin_reduced_job, str(prep), str(work / "cache-twin-r"), twin_source)
    twin_default = run_cache(default_job, str(prep), str(work / "cache-twin-d"), twin_source)
    out["twin_same_config"] = _summary_figures(twin_reduced, twin_reduced_job)
    out["twin_default_config"] = _summary_figures(twin_default, default_job)
    out["twin_bytes_match_sd_run"] = twin_reduced.bytes_per_sample == sd_bytes
    return out


# ----------------------------------------------------------------------------- the parent


def _busy_ticks() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def run_child(name: str, params: dict) -> dict:
    """``measure_<name>(params)`` in a fresh interpreter, with the machine's load around it."""
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", name, "--params", json.dumps(params)]
    print(f"measuring {name} ...", file=sys.stderr, flush=True)
    before, ticks, t0 = os.getloadavg()[0], _busy_ticks(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env=dict(os.environ, RAY_USAGE_STATS_ENABLED="0", TQDM_DISABLE="1"))
    wall = time.perf_counter() - t0
    after_ticks = _busy_ticks()
    if done.returncode != 0:
        raise RuntimeError(f"measurement {name} failed (rc {done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    busy = (after_ticks[0] - ticks[0]) / max(1, after_ticks[1] - ticks[1])
    result["params"] = params
    result["machine_load"] = {"loadavg_1m_before": round(before, 2), "loadavg_1m_after": round(os.getloadavg()[0], 2),
                              "machine_busy_cores": round(busy * (os.cpu_count() or 1), 2),
                              "process_wall_s": round(wall, 1)}
    return result


def _median(values) -> float:
    return round(statistics.median(values), 4)


def summarize(loader: dict, step: dict, cache: dict, gpu: dict) -> dict:
    out: dict = {}
    lr, lp, parts = loader["rounds"], loader["params"], loader["breakdown_ms_per_sample"]
    raw_ms = 1000 / _median(o["raw_tar"]["samples_per_s"] for o in lr)
    body_only = parts["build"] - parts["render_pose"] + parts["render_pose_openpose18"]
    no_pose = parts["build"] - parts["pose_frames"]
    out["loader_vs_raw_tar"] = {
        "ratio": _median(o["ratio_exact"] for o in lr), "target": ">= 0.8",
        "ratio_per_round": [round(o["ratio_exact"], 4) for o in lr],
        "resampled_ratio": _median(o["ratio_resampled"] for o in lr),
        "samples_per_s": {k: _median(o[k]["samples_per_s"] for o in lr) for k in ("raw_tar", "exact", "resampled")},
        "breakdown_ms_per_sample": parts,
        "ratio_estimate_openpose18": round(raw_ms / body_only, 4) if body_only > 0 else None,
        "ratio_estimate_without_poses": round(raw_ms / no_pose, 4) if no_pose > 0 else None,
        "estimates": "raw-tar ms/sample over the breakdown's build time with the render swapped for a body-only "
                     "one, or without pose_frames at all (single pass, not alternated: indicative only)",
        "inputs": {"reader": "Stage1VideoDataset, mode='exact' (uneven='none') and mode='resampled' "
                             "(samples_per_epoch = the samples), defaults otherwise (sample_posterior=True, "
                             "augment_prob=0.5); in-process, no DataLoader",
                   "window_frames": lp["window"], "clip_frames": lp["clip_frames"],
                   "bucket": f"{lp['bucket']}x{lp['bucket']}", "samples": loader["cache_job"]["samples"],
                   "shards": loader["cache_job"]["shards"],
                   "bytes_per_sample": loader["cache_job"]["bytes_per_sample"],
                   "raw_tar_bytes_per_pass": loader["raw_tar_bytes_per_pass"], "keypoint_layout": LAYOUT,
                   "threads": 1, "rounds": len(lr), "min_s_per_reader_and_round": lp["min_s"]},
    }
    sr = step["rounds"]
    nets = ("SD-1.5-size random weights (model/sd15.py); the denoising UNet "
            + ("with motion modules" if step["motion_module"] else "without motion modules (the image-level phase)"))
    out["cached_vs_onthefly_speedup"] = {
        "ratio": _median(o["ratio"] for o in sr), "target": ">= 1.4 (the published figure for SD training)",
        "ratio_per_round": [round(o["ratio"], 4) for o in sr],
        "ratio_cpu_time": _median(o["ratio_cpu_time"] for o in sr),
        "ratio_cpu_time_per_round": [round(o["ratio_cpu_time"], 4) for o in sr],
        "ratio_note": "ratio: wall time (the figure asked for); ratio_cpu_time: this process's CPU time, which "
                      "other jobs on a shared machine disturb much less",
        "cached_step_s": _median(o["cached"]["step_s"] for o in sr),
        "onthefly_step_s": _median(o["onthefly"]["step_s"] for o in sr),
        "onthefly_encode_s": _median(o["onthefly"]["encode_s"] for o in sr),
        "inputs": {"size": f"{step['size']}x{step['size']}, image level (1 target frame, batch 1)",
                   "why_this_size": "the smallest size at which the SD UNet keeps its 4 levels meaningful "
                                    "(32x32 latent, 4x4 at the bottom); any smaller and the VAE share shrinks "
                                    "towards nothing while the run stays dominated by the UNets",
                   "networks": nets,
                   "trained": "reference UNet + denoising UNet + pose guider, fp32 on the CPU; each gradient is "
                              "freed once complete (stands in for a fused optimizer; no update is timed)",
                   "onthefly_extra": "SD-size VAE encode of target, masked target and reference (posterior sample "
                                     "for the target) + CLIP ViT-L/14 image embedding of the reference, no grad",
                   "torch_threads": step["torch_threads"], "rounds": len(sr),
                   "warmup": "one on-the-fly step before the rounds, not counted"},
    }
    sd, twin, cp = cache["sd_size"], cache["twin_default_config"], cache["params"]
    out["bytes_per_sample"] = {
        "value": twin["bytes_per_sample"], "bytes_per_frame": round(twin["bytes_per_sample"] / cp["frames"]),
        "config": f"default CacheConfig (mask_variants=2, num_references=4, float16 latents), 512x512, "
                  f"{cp['frames']} frames, keypoints {LAYOUT}",
        "sd_size_run": sd["bytes_per_sample"],
        "twin_run_same_config_as_sd_run": cache["twin_same_config"]["bytes_per_sample"],
        "twin_bytes_match_sd_run": cache["twin_bytes_match_sd_run"],
        "note": "bytes depend only on shapes and dtypes, so the default-config figure comes from encoders with the "
                "SD-size output shapes (tiny VAE, 2-layer CLIP with the 768-d projection) on the same clip; the same "
                "twins in the SD-size run's reduced config must give its bytes exactly (twin_bytes_match_sd_run)",
    }
    out["clips_per_s"] = {
        "value": round(sd["clips_per_s_unrounded"], 5), "frames_per_s": round(sd["frames_per_s_unrounded"], 4),
        "summary_clips_per_s": sd["clips_per_s"], "excl_encoder_load": sd["clips_per_s_excl_setup"],
        "config": {"bucket": "512x512", "frames": cp["frames"], "clips": sd["clips"], "mask_variants": cp["variants"],
                   "num_references": cp["references"], "vae_images_per_clip": sd["vae_images_per_clip"],
                   "encoders": "SD-size VAE + CLIP image encoder, random weights via save_pretrained",
                   "executor": "local", "device": "cpu", "torch_threads": cache["torch_threads"]},
        "default_config_estimate": cache["default_config_estimate"],
        "note": "value: clips / encode_s of the cache job's summary (encode_s includes loading the encoders; the "
                "summary's own clips_per_s is rounded to 3 decimals); the run uses fewer mask variants and "
                "references than the default to fit the CPU budget",
    }
    out["gpu"] = gpu
    return out


def _load_warning(start: float, end: float, children: list[dict]) -> str | None:
    notes = []
    cores = os.cpu_count() or 1
    if start > 0.5:
        notes.append(f"1-minute load average {start:.2f} before the run started")
    for child in children:
        load = child.get("machine_load", {})
        if child.get("name") == "loader" and load.get("machine_busy_cores", 0) > 1.3:
            notes.append(f"loader: {load['machine_busy_cores']} of {cores} cores busy during a mostly 1-thread run")
        if load.get("loadavg_1m_after", 0) > cores + 1:
            notes.append(f"{child.get('name')}: 1-minute load average {load['loadavg_1m_after']} after it")
    if end > cores + 1:
        notes.append(f"1-minute load average {end:.2f} at the end")
    return "machine was loaded: " + "; ".join(notes) if notes else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="JSON file to write")
    parser.add_argument("--gpu", action="store_true",
                        help="also measure the cache job on one GPU (skipped without CUDA)")
    parser.add_argument("--loader-rounds", type=int, default=5, help="alternating rounds of the loader comparison")
    parser.add_argument("--loader-min-s", type=float, default=1.0,
                        help="seconds each reader runs per round (whole passes)")
    parser.add_argument("--bucket", type=int, default=256, help="square bucket of the loader's cache")
    parser.add_argument("--clips-per-video", type=int, default=4, help="clips per sample video in the loader's cache")
    parser.add_argument("--clip-frames", type=int, default=24, help="frames per cached clip (loader)")
    parser.add_argument("--window", type=int, default=16, help="frames per video-dataset sample (loader)")
    parser.add_argument("--step-rounds", type=int, default=3,
                        help="alternating rounds of the training-step comparison")
    parser.add_argument("--step-size", type=int, default=256, help="image size of the training step")
    parser.add_argument("--step-threads", type=int, default=1,
                        help="torch threads of the training step (1: steadiest on a shared machine)")
    parser.add_argument("--motion-module", action="store_true",
                        help="denoising UNet with motion modules (default: the image-level network without)")
    parser.add_argument("--cache-frames", type=int, default=8, help="frames of the clip the SD-size cache run encodes")
    parser.add_argument("--cache-variants", type=int, default=0, help="augmented masks in the SD-size cache run")
    parser.add_argument("--cache-references", type=int, default=1, help="references in the SD-size cache run")
    parser.add_argument("--measure", choices=["loader", "step", "cache"], help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        fn = {"loader": measure_loader, "step": measure_step, "cache": measure_cache}[args.measure]
        print(json.dumps(fn(json.loads(args.params))))
        return 0
    if not args.out:
        parser.error("--out is required")
    import torch

    start_load, started = os.getloadavg()[0], time.perf_counter()
    result: dict = {"benchmark": "loader", "created_unix": int(time.time()), "machine": machine_info(PACKAGES)}
    children = {
        "loader": run_child("loader", {"bucket": args.bucket, "clips_per_video": args.clips_per_video,
                                       "clip_frames": args.clip_frames, "window": args.window,
                                       "samples_per_shard": 4, "rounds": args.loader_rounds,
                                       "min_s": args.loader_min_s}),
        "step": run_child("step", {"size": args.step_size, "rounds": args.step_rounds,
                                   "motion_module": args.motion_module, "threads": args.step_threads}),
        "cache": run_child("cache", {"device": "cpu", "videos": 1, "clips_per_video": 1, "frames": args.cache_frames,
                                     "variants": args.cache_variants, "references": args.cache_references}),
    }
    if not args.gpu:
        gpu = {"skipped": "not requested (--gpu)"}
    elif not torch.cuda.is_available():
        gpu = {"skipped": "no CUDA device"}
    else:
        gpu = run_child("cache", {"device": "cuda", "videos": 2, "clips_per_video": 4, "frames": 24,
                                  "variants": 2, "references": 4})
        children["gpu"] = gpu
        gpu = {"clips_per_s": gpu["sd_size"]["clips_per_s_unrounded"],
               "frames_per_s": gpu["sd_size"]["frames_per_s_unrounded"],
               "clips_per_s_excl_encoder_load": gpu["sd_size"]["clips_per_s_excl_setup"],
               "gpus": 1, "gpu": gpu["sd_size"].get("gpu"), "dtype": gpu["sd_size"].get("dtype"),
               "config": gpu["sd_size"]["config"], "clips": gpu["sd_size"]["clips"]}
    result.update(summarize(children["loader"], children["step"], children["cache"], gpu))
    end_load = os.getloadavg()[0]
    result["load"] = {"loadavg_1m_at_start": round(start_load, 2), "loadavg_1m_at_end": round(end_load, 2),
                      "total_s": round(time.perf_counter() - started, 1)}
    result["load_warning"] = _load_warning(start_load, end_load, [dict(v, name=k) for k, v in children.items()])
    result["raw"] = children
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)
    keys = ("loader_vs_raw_tar", "cached_vs_onthefly_speedup", "bytes_per_sample", "clips_per_s", "gpu", "load",
            "load_warning")
    print(json.dumps({k: result[k] for k in keys}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
