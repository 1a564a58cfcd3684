"""The main job end to end on the embedded defaults (``make demo``).

Local Prefect (ephemeral API), local Ray, the real sample videos and models fetched from the
registries: preprocess the samples into clips with masks and poses, cache their latents into
training shards (tiny random encoders: the shapes and the path are real, the values not), then run
inference with the random tiny preset on one clip to show the whole path. Prints where the outputs are.
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


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    parser.add_argument("--skip-infer", action="store_true", help="no inference step")
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
    # Buckets near the demo clips' 384-pixel short side keep the tiny encoders quick.
    run(anycharv + ["cache", "--input", str(out / "preprocess"), "--output", str(out / "cache"), "--preset", "tiny",
                    "cache.buckets=[[256,256],[384,256],[256,384]]", "cache.val_fraction=0.5"])
    cache_summary = json.loads((out / "cache" / "summary.json").read_text())

    video_out = out / "infer" / "tiny_preset.mp4"
    if not args.skip_infer:
        run(anycharv + ["infer", "--preset", "tiny", "--ref", str(asset_path(REFERENCE_IMAGE)),
                        "--video", videos[0], "--out", str(video_out), "--max-frames", "16", "--steps", "4"])

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
        "inference_video": None if args.skip_infer else str(video_out),
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
    if not args.skip_infer:
        print(f"  inference: {video_out}  (tiny preset: random weights, the pixels are meaningless)")
    print(f"  summary:   {out / 'demo-summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
