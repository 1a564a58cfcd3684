"""The main job end to end on the embedded defaults (``make demo``).

Local Prefect (ephemeral API), local Ray, the real sample videos and models fetched from the
registries: preprocess the samples into clips with masks and poses, cache their latents into
training shards (tiny random encoders: the shapes and the path are real, the values not), train
both stages briefly on Ray Train with self-boosting in between (tiny networks, a few hundred steps
in all), export the stage-2 model and run inference with it on one of the videos. Prints where the
outputs are.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from anycharv.assets import asset_path

SAMPLE_VIDEOS = ["sports2d_demo.mp4", "pose2sim_cam01.mp4"]
REFERENCE_IMAGE = "astronaut.png"
# Every training stage of the demo: batch 1 of 8 frames, a learning rate for minutes not days,
# validation at the end only.
DEMO_TRAIN = ["train.data.batch_size=1", "train.data.num_frames=8", "train.optim.lr=5e-4",
              "train.optim.warmup_steps=10", "runtime.checkpoint.every=1000", "runtime.validation.every=0",
              "runtime.validation.num_frames=8", "runtime.validation.steps=4", "runtime.log_every=10"]


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    parser.add_argument("--skip-infer", action="store_true", help="no inference step")
    parser.add_argument("--skip-train", action="store_true", help="no training (and so no inference) step")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    anycharv = [sys.executable, "-m", "anycharv.cli"]
    videos = [str(asset_path(name)) for name in SAMPLE_VIDEOS]

    start = time.time()
    config = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
    cmd = anycharv + ["preprocess", "--config", str(config), "--output", str(out / "preprocess")]
    for video in videos:
        cmd += ["--input", video]
    run(cmd)
    manifest = out / "preprocess" / "manifest" / "clips.parquet"
    # One square bucket below the clips' 384-pixel short side keeps the tiny networks quick.
    run(anycharv + ["cache", "--input", str(out / "preprocess"), "--output", str(out / "cache"), "--preset", "tiny",
                    "cache.buckets=[[256,256]]", "cache.val_fraction=0.5"])
    cache_summary = json.loads((out / "cache" / "summary.json").read_text())

    runs = out / "train"
    if not args.skip_train:
        every_stage = [f"{step}.{key}" for step in ("stage1_image", "stage1_video", "stage2") for key in DEMO_TRAIN]
        run(anycharv + ["two-stage", "--data", str(out / "cache"), "--output", str(runs), "--preset", "tiny",
                        *every_stage,
                        "stage1_image.runtime.max_steps=150", "stage1_image.train.data.batch_size=2",
                        "stage1_video.runtime.max_steps=30", "stage2.runtime.max_steps=30",
                        "self_boost.boost.steps=4", "self_boost.boost.context_frames=16",
                        "self_boost.boost.context_overlap=4"])
        run(anycharv + ["export", str(runs / "stage2"), str(out / "model")])
    video_out = out / "infer" / "demo_model.mp4"
    if not args.skip_infer and not args.skip_train:
        run(anycharv + ["infer", "--weights", str(out / "model"), "--ref", str(asset_path(REFERENCE_IMAGE)),
                        "--video", videos[0], "--out", str(video_out), "--max-frames", "16", "--steps", "4",
                        "--size", "256"])  # the scale the demo model was trained at

    import pyarrow.parquet as pq

    table = pq.read_table(manifest).to_pylist()
    ok = [r for r in table if r["status"] == "ok"]
    previews = sorted((out / "preprocess" / "clips").glob("*/preview*.png"))  # the published clips only
    summary = {
        "manifest": str(manifest),
        "clips_ok": len(ok),
        "rows_rejected": len(table) - len(ok),
        "previews": [str(p) for p in previews[:4]] + (["..."] if len(previews) > 4 else []),
        "cache_index": str(out / "cache" / "shards" / "index.parquet"),
        "cache_samples": cache_summary["samples"],
        "cache_splits": cache_summary["splits"],
        "training_runs": None if args.skip_train else {n: str(runs / n) for n in ("stage1_image", "stage1_video",
                                                                                   "stage2")},
        "self_boost": None if args.skip_train else str(out / "cache" / "shards" / "boost"),
        "model": None if args.skip_train else str(out / "model"),
        "inference_video": None if args.skip_infer or args.skip_train else str(video_out),
        "seconds": round(time.time() - start, 1),
    }
    (out / "demo-summary.json").write_text(json.dumps(summary, indent=2))
    print("\nDemo finished.")
    print(f"  manifest:  {manifest}  ({len(ok)} clips ok, {len(table) - len(ok)} rejected rows)")
    print(f"  previews:  {len(previews)} PNG files under {out / 'preprocess' / 'clips'}")
    for p in previews[:4]:
        print(f"             {p}")
    print(f"  cache:     {out / 'cache' / 'shards' / 'index.parquet'}  ({cache_summary['samples']} samples, "
          f"splits {cache_summary['splits']}; decoded check: {out / 'cache' / 'preview.png'})")
    if not args.skip_train:
        for name in ("stage1_image", "stage1_video", "stage2"):
            print(f"  training:  {runs / name}  (metrics.jsonl, checkpoints/, validation/, tensorboard/)")
        print(f"  pairs:     {out / 'cache' / 'shards' / 'boost'}  (self-boost shards and previews/)")
        print(f"  model:     {out / 'model'}  (exported from the stage-2 run)")
    if not args.skip_infer and not args.skip_train:
        print(f"  inference: {video_out}  (tiny networks on random tiny encoders trained for minutes: the pipeline "
              "is the real one, the pixels are not meaningful)")
    print(f"  summary:   {out / 'demo-summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
