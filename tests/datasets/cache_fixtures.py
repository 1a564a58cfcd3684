"""Tiny latent caches written the way the cache job does (``write_shard`` + ``write_index``, members
as in ``anycharv.datasets.schema``), with values that say where they came from:

- ``latents[f] = 100 * number + f`` (every element), ``latents_std`` per channel 0.1, 0.2, 0.3, 0
- ``masked_latents_<k>[f] = 100 * k + f``, so a sample tells which mask variant was picked
- ``ref_latents[j] = 100 * number + 50 + j``, ``ref_clip[j] = j``
- ``generated_latents[f] = -(100 * number + f)`` in the self-boost set
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anycharv.boxes import boxes_to_masks
from anycharv.datasets import codec, schema
from anycharv.datasets.shard_index import write_index
from anycharv.datasets.shards import write_shard

LAYOUT_POINTS = {"openpose18": 18, "dwpose134": 134}


@dataclass
class Clip:
    clip_id: str
    number: int
    frames: int = 8
    split: str = "train"
    height: int = 64
    width: int = 64
    variants: int = 2  # augmented mask variants V (variant 0 is the fine mask)
    refs: int = 2
    dim: int = 16
    layout: str = "openpose18"
    dtype: str = "float32"
    schema_version: int = schema.SCHEMA_VERSION
    omit: tuple[str, ...] = ()  # members to leave out (a broken writer)
    arrays: dict = field(default_factory=dict)  # filled by clip_members: the values written

    @property
    def bucket(self) -> str:
        return schema.bucket_name(self.height, self.width)


def clip_members(clip: Clip) -> dict[str, bytes]:
    rng = np.random.default_rng(clip.number)
    f, lh, lw, dt = clip.frames, clip.height // 8, clip.width // 8, np.dtype(clip.dtype)
    frame = np.arange(f, dtype=np.float32)[:, None, None, None]
    ones = np.ones((f, 4, lh, lw), np.float32)
    boxes = np.tile(np.array([[8, 8, 40, 56]], np.float32), (f, 1)) + rng.uniform(0, 8, (f, 1)).astype(np.float32)
    box_mask = (boxes_to_masks(boxes / 8, lh, lw) > 0).astype(np.uint8)[:, None]
    k_points = LAYOUT_POINTS[clip.layout]
    keypoints = np.concatenate([rng.uniform(4, min(clip.height, clip.width) - 4, (f, k_points, 2)),
                                np.ones((f, k_points, 1))], axis=-1).astype(np.float32)
    arrays = {
        schema.LATENTS: ((100 * clip.number + frame) * ones).astype(dt),
        schema.LATENTS_STD: (np.array([0.1, 0.2, 0.3, 0.0], np.float32)[None, :, None, None] * ones).astype(dt),
        schema.BOX_MASK: box_mask,
        schema.BOXES: boxes,
        schema.KEYPOINTS: keypoints,
        schema.REF_LATENTS: (100 * clip.number + 50 + np.arange(clip.refs, dtype=np.float32)[:, None, None, None]
                             * np.ones((clip.refs, 4, lh, lw), np.float32)).astype(dt),
        schema.REF_CLIP: np.arange(clip.refs, dtype=np.float32)[:, None, None] * np.ones((clip.refs, 1, clip.dim),
                                                                                         np.float32),
    }
    for k in range(clip.variants + 1):
        arrays[schema.masked_latents(k)] = ((100 * k + frame) * ones).astype(dt)
        grown = np.roll(box_mask, k, axis=-1) | box_mask
        arrays[schema.mask(k)] = grown.astype(np.uint8)
    clip.arrays = arrays
    meta = {
        "schema_version": clip.schema_version, "clip_id": clip.clip_id, "source": f"videos/{clip.clip_id}.mp4",
        "source_digest": f"digest{clip.number}", "frame_indices": list(range(f)), "fps": 25.0, "num_frames": f,
        "height": clip.height, "width": clip.width, "latent_height": lh, "latent_width": lw,
        "bucket": clip.bucket, "split": clip.split, "crop": [0, 0, clip.width, clip.height],
        "keypoint_layout": clip.layout, "mask_variants": ["fine", "jitter", "curved_box"][: clip.variants + 1],
        "reference_frames": list(range(clip.refs)), "encoders": {"vae": "tiny"}, "latent_dtype": clip.dtype,
    }
    members = {name: codec.encode_npy(value) for name, value in arrays.items()}
    members[schema.META] = codec.encode_json(meta)
    return {name: data for name, data in members.items() if name not in clip.omit}


def _write_set(root: Path, set_name: str, clips: list[Clip], members_of, per_shard: int) -> list[dict]:
    """Shards of ``per_shard`` clips per (bucket, split), in clip order; returns the index rows."""
    groups: dict[tuple[str, str], list[Clip]] = {}
    for clip in clips:
        groups.setdefault((clip.bucket, clip.split), []).append(clip)
    rows = []
    for (bucket, split), group in sorted(groups.items()):
        for n in range(0, len(group), per_shard):
            chunk = group[n:n + per_shard]
            rel = schema.shard_name(set_name, bucket, split, n // per_shard)
            by_key = {c.clip_id: c for c in chunk}
            for row in write_shard(root / "shards" / rel, [(c.clip_id, members_of(c)) for c in chunk]):
                clip = by_key[row["key"]]
                rows.append({"clip_id": clip.clip_id, "set": set_name, "shard": rel, "bucket": bucket,
                             "split": split, "num_frames": clip.frames, "source": f"videos/{clip.clip_id}.mp4",
                             "source_digest": f"digest{clip.number}", "schema_version": clip.schema_version,
                             "sample_offset": row["sample_offset"], "sample_size": row["sample_size"],
                             "members": row["members"]})
    write_index(rows, root / "shards" / "index.parquet")
    return rows


def make_cache(root: Path, clips: list[Clip], per_shard: int = 3) -> dict[str, Clip]:
    """A stage-1 cache folder at ``root``; returns the clips by id (with ``arrays`` filled)."""
    _write_set(Path(root), "stage1", clips, clip_members, per_shard)
    return {c.clip_id: c for c in clips}


def selfboost_members(clip: Clip) -> dict[str, bytes]:
    lh, lw = clip.height // 8, clip.width // 8
    frame = np.arange(clip.frames, dtype=np.float32)[:, None, None, None]
    generated = (-(100 * clip.number + frame) * np.ones((clip.frames, 4, lh, lw), np.float32)).astype(clip.dtype)
    meta = {"schema_version": clip.schema_version, "clip_id": clip.clip_id, "reference_clip_id": "someone",
            "model": "tiny", "seed": clip.number, "num_frames": clip.frames}
    members = {schema.META: codec.encode_json(meta), schema.GENERATED_LATENTS: codec.encode_npy(generated)}
    return {name: data for name, data in members.items() if name not in clip.omit}


def make_selfboost(root: Path, clips: list[Clip], per_shard: int = 3) -> None:
    _write_set(Path(root), "selfboost", clips, selfboost_members, per_shard)


def clips(n: int, **kw) -> list[Clip]:
    return [Clip(f"clip{i:02d}", i, **kw) for i in range(n)]
