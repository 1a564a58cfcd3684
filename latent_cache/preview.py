"""A check a person can look at: one cached sample decoded by the VAE, under its source frames.

Row 1: the source frames, cropped and resized as the cache job did; row 2: the decoded posterior
mean; row 3: the decoded stage-1 input (fine mask blacked out). If the rows differ in anything but
VAE blur, the cache is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from anycharv.atomic import atomic_write_bytes
from anycharv.datasets import schema
from anycharv.datasets.codec import decode, encode_png
from anycharv.datasets.shard_index import read_index
from anycharv.datasets.shards import read_member
from anycharv.model.encoders import decode_latents
from anycharv.model.image_processing import video_to_uint8


def _member(sample, field: str):
    offset, size = sample.members[field]
    return decode(field, read_member(sample.shard, offset, size), f"{sample.shard} {sample.clip_id}")


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """(1,3,F,H,W) in [0,1] -> (F,H,W,3) uint8."""
    return video_to_uint8(video[0].permute(1, 2, 3, 0), mode="round").numpy()


def preview_strip(shards_dir: str | Path, vae, max_frames: int = 4) -> tuple[np.ndarray, dict]:
    """(image, meta) for the first sample of the index."""
    import cv2

    from anycharv.preprocessing.video_io import read_frames

    sample = read_index(shards_dir)[0]
    meta = _member(sample, schema.META)
    count = min(max_frames, meta["num_frames"])
    pick = np.linspace(0, meta["num_frames"] - 1, count).round().astype(int)
    latents = torch.from_numpy(_member(sample, schema.LATENTS)[pick].astype(np.float32))
    masked = torch.from_numpy(_member(sample, schema.masked_latents(0))[pick].astype(np.float32))
    decoded = [_to_uint8(decode_latents(vae, x.permute(1, 0, 2, 3)[None])) for x in (latents, masked)]
    h, w = meta["height"], meta["width"]
    x0, y0, x1, y1 = meta["crop"]
    first = meta["frame_indices"][0]
    frames = read_frames(meta["source"], first, first + meta["num_frames"], (meta["prep_width"], meta["prep_height"]))
    source = np.stack([cv2.resize(frames[i][y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_AREA) for i in pick])
    rows = [np.concatenate(list(row), axis=1) for row in (source, *decoded)]
    return np.concatenate(rows, axis=0), meta


def write_preview(shards_dir: str | Path, vae, path: str | Path) -> Path:
    image, _ = preview_strip(shards_dir, vae)
    atomic_write_bytes(path, encode_png(image))
    return Path(path)
