"""Which clips go where: bucket by aspect ratio, split by source video, shard by sorted clip id.

Everything here is a function of the preprocessing manifest and ``CacheConfig`` alone, so a rerun
or a resumed run assigns every clip to the same shard:

- bucket: the configured (height, width) nearest the clip's aspect ratio (in log scale);
- split: a source video is ``val`` when a hash of its content digest and the seed falls under
  ``val_fraction``; with two or more videos and none drawn, the one with the smallest hash is. All
  clips of a video share its split, so no validation video leaks into training;
- shard: within (bucket, split), clips sorted by id, ``samples_per_shard`` per shard.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from anycharv.datasets.schema import bucket_name, shard_name
from anycharv.errors import InputError
from anycharv.executor.task import Task
from anycharv.latent_cache.config import CacheConfig

ANNOTATIONS = ("boxes", "keypoints", "masks")


@dataclass(kw_only=True)
class CacheTask(Task):
    """One clip to encode: where its frames and annotations are, and where its sample goes."""

    clip_id: str
    source: str
    source_digest: str
    start_frame: int
    end_frame: int
    fps: float
    width: int  # processing size of the annotations
    height: int
    keypoint_layout: str
    annotations: dict[str, str]  # name -> absolute path
    bucket_height: int
    bucket_width: int
    split: str
    shard: str  # relative to shards/
    sample_path: str = ""  # the encoded sample (a small tar) once done
    sample_bytes: int = 0
    num_frames: int = 0
    encoders: dict = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        return self.clip_id

    @property
    def bucket(self) -> str:
        return bucket_name(self.bucket_height, self.bucket_width)


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: (abs(aspect - math.log(b[1] / b[0])), -b[0] * b[1]))


def _unit_hash(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / float(16**12)


def split_sources(digests: list[str], val_fraction: float, seed: int) -> dict[str, str]:
    """Source digest -> "train" | "val" (see the module docstring)."""
    unique = sorted(set(digests))
    score = {d: _unit_hash(f"{seed}:{d}") for d in unique}
    split = {d: "val" if score[d] < val_fraction else "train" for d in unique}
    if val_fraction > 0 and len(unique) >= 2 and "val" not in split.values():
        split[min(unique, key=score.get)] = "val"
    if len(unique) >= 2 and "train" not in split.values():
        split[max(unique, key=score.get)] = "train"
    return split


def read_ok_clips(prep_dir: str | os.PathLike) -> list[dict]:
    """The ``ok`` clip rows of a preprocessing output's manifest; InputError naming the folder when
    there is no manifest or it lacks what the cache needs."""
    from anycharv.preprocessing.manifest import read_manifest

    root = Path(prep_dir).expanduser().resolve()
    path = root / "manifest" / "clips.parquet"
    if not path.is_file():
        raise InputError(str(prep_dir), "no manifest/clips.parquet here (run `anycharv preprocess` first)",
                         code="no_manifest")
    rows = read_manifest(path).to_pylist()
    clips = [r for r in rows if r.get("kind") == "clip" and r.get("status") == "ok"]
    needed = [f"ann_{a}" for a in ANNOTATIONS] + ["stat_keypoint_layout"]
    for row in clips:
        missing = [c for c in needed if not row.get(c)]
        if missing:
            raise InputError(str(path), f"clip {row['clip_id']} lacks {missing}", code="bad_manifest")
        row["_root"] = str(root)
    return clips


def plan_tasks(clips: list[dict], cfg: CacheConfig) -> list[CacheTask]:
    """One task per clip, sorted by shard then clip id."""
    split_of = split_sources([c["source_digest"] for c in clips], cfg.val_fraction, cfg.seed)
    groups: dict[tuple[tuple[int, int], str], list[dict]] = {}
    for clip in clips:
        bucket = nearest_bucket(int(clip["width"]), int(clip["height"]), cfg.buckets)
        groups.setdefault((bucket, split_of[clip["source_digest"]]), []).append(clip)
    tasks = []
    for (bucket, split), members in sorted(groups.items()):
        for i, clip in enumerate(sorted(members, key=lambda c: c["clip_id"])):
            root = Path(clip["_root"])
            tasks.append(CacheTask(
                clip_id=clip["clip_id"], source=clip["source"], source_digest=clip["source_digest"],
                start_frame=int(clip["start_frame"]), end_frame=int(clip["end_frame"]), fps=float(clip["fps"]),
                width=int(clip["width"]), height=int(clip["height"]),
                keypoint_layout=str(clip["stat_keypoint_layout"]),
                annotations={a: str(root / clip[f"ann_{a}"]) for a in ANNOTATIONS},
                bucket_height=bucket[0], bucket_width=bucket[1], split=split,
                shard=shard_name("stage1", bucket_name(*bucket), split, i // cfg.samples_per_shard)))
    return sorted(tasks, key=lambda t: (t.shard, t.clip_id))
