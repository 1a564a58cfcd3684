"""A small preprocessing output in the manifest/annotation contract, made without running the
preprocessing models: real frames of the sample videos, a box and an elliptic fine mask around the
frame centre, keypoints inside the box. The cache job reads it as it reads a real one. (Loaded by
path from the tests that need it: tests/ is not a package.)"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from anycharv.assets import asset_path
from anycharv.preprocessing.annotations import save_array, save_masks
from anycharv.preprocessing.manifest import rows_to_table

# (asset, processing width, height): two portrait videos and one landscape one.
SOURCES = [("pose2sim_cam01.mp4", 48, 80), ("pose2sim_cam02.mp4", 48, 80), ("sports2d_demo.mp4", 80, 48)]


def clip_annotations(num_frames: int, width: int, height: int, rng: np.random.Generator):
    boxes = np.tile(np.array([[width * 0.3, height * 0.15, width * 0.7, height * 0.9]], np.float32), (num_frames, 1))
    boxes[:, [0, 2]] += np.linspace(-2, 2, num_frames, dtype=np.float32)[:, None]
    yy, xx = np.mgrid[:height, :width] + 0.5
    masks = np.zeros((num_frames, height, width), bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2.5, (y1 - y0) / 2.3
        masks[i] = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    keypoints = np.zeros((num_frames, 18, 3), np.float32)
    keypoints[..., 0] = rng.uniform(boxes[:, :1], boxes[:, 2:3], (num_frames, 18))
    keypoints[..., 1] = rng.uniform(boxes[:, 1:2], boxes[:, 3:4], (num_frames, 18))
    keypoints[..., 2] = 0.9
    return boxes, masks, keypoints


def make_prep_output(root: Path, clips_per_source: int = 2, num_frames: int = 8, sources=SOURCES) -> Path:
    """``root`` as a preprocessing output with ``clips_per_source`` clips of each source."""
    rng = np.random.default_rng(0)
    rows = []
    for name, width, height in sources:
        path = str(asset_path(name))
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        for c in range(clips_per_source):
            start = c * num_frames * 2
            clip_id = hashlib.sha256(f"{digest}:{start}".encode()).hexdigest()[:20]
            clip_dir = root / "clips" / clip_id
            clip_dir.mkdir(parents=True)
            boxes, masks, keypoints = clip_annotations(num_frames, width, height, rng)
            ann = {"boxes": save_array(clip_dir, "boxes", boxes), "masks": save_masks(clip_dir, masks),
                   "keypoints": save_array(clip_dir, "keypoints", keypoints)}
            rows.append({
                "clip_id": clip_id, "kind": "clip", "source": path, "source_digest": digest, "config_hash": "test",
                "status": "ok", "reason": "", "detail": "", "start_frame": start, "end_frame": start + num_frames,
                "num_frames": num_frames, "fps": 30.0, "width": width, "height": height, "track_id": 1,
                "annotation_dir": f"clips/{clip_id}", "stat_keypoint_layout": "openpose18",
                **{f"ann_{k}": f"clips/{clip_id}/{v}" for k, v in ann.items()}})
    rows.append({"clip_id": "rejected0", "kind": "clip", "source": rows[0]["source"], "status": "rejected",
                 "reason": "too_small", "detail": "", "start_frame": 100, "end_frame": 108})
    (root / "manifest").mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    pq.write_table(rows_to_table(rows), buf)
    (root / "manifest" / "clips.parquet").write_bytes(buf.getvalue())
    return root
