"""Which clips get generated, with whose character, into which shard.

Everything here is a function of the cache's index and ``BoostConfig`` alone, so a rerun or a
resumed run plans the same pairs and shards. A self-boost shard holds the clips of one cache shard
(``stage1/<bucket>/<split>-N.tar`` -> ``selfboost/<bucket>/<split>-N.tar``): the two sets join
shard by shard, and a shard is written as soon as its clips are done.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from anycharv.datasets.shard_index import INDEX_NAME, read_index
from anycharv.errors import InputError
from anycharv.executor.task import Task
from anycharv.self_boost.config import BoostConfig
from anycharv.self_boost.layout import SET_NAME
from anycharv.self_boost.pairs import CacheClip, choose_references

NO_OTHER_SOURCE = "no_other_source"
INDEX_COLUMNS = ["clip_id", "set", "shard", "bucket", "split", "num_frames", "source", "source_digest"]


@dataclass(kw_only=True)
class BoostTask(Task):
    """One clip to re-generate, and the clip whose character it gets."""

    clip_id: str
    source: str
    source_digest: str
    split: str
    bucket: str
    shard: str  # relative to the output folder
    num_frames: int
    reference_clip_id: str = ""
    reference_source: str = ""
    reference_bucket: str = ""
    reference_frame: int = -1  # which of the reference clip's cached references (set by the stage)
    preview: bool = False  # write OUT/previews/<clip_id>.mp4
    sample_path: str = ""  # the generated sample (a small tar) once done
    sample_bytes: int = 0
    preview_path: str = ""

    @property
    def task_id(self) -> str:
        return self.clip_id

    @property
    def units(self) -> int:
        return self.num_frames


# What the records keep besides the packer's own fields (``latent_cache.assembly.RECORD_FIELDS``).
RECORD_EXTRA = ("reference_clip_id", "reference_source", "reference_bucket", "reference_frame", "preview_path")


def read_cache_clips(cache_dir: str | os.PathLike) -> list[dict]:
    """The stage-1 rows of ``cache_dir``'s index; InputError naming the folder when it is not a cache."""
    shards = Path(cache_dir).expanduser() / "shards"
    if not (shards / INDEX_NAME).is_file():
        raise InputError(str(cache_dir), f"no shards/{INDEX_NAME} here: not a latent cache (run `anycharv cache` "
                         "first)", code="no_cache")
    read_index(shards)  # its errors name a corrupt index or missing columns
    rows = [r for r in pq.read_table(shards / INDEX_NAME, columns=INDEX_COLUMNS).to_pylist() if r["set"] == "stage1"]
    if not rows:
        raise InputError(str(cache_dir), "the cache's index has no stage-1 sample", code="no_clips")
    return rows


def boost_shard(cache_shard: str) -> str:
    """``stage1/<bucket>/<split>-N.tar`` -> ``selfboost/<bucket>/<split>-N.tar``."""
    return f"{SET_NAME}/{cache_shard.split('/', 1)[1]}"


def plan_tasks(rows: list[dict], cfg: BoostConfig) -> list[BoostTask]:
    """One task per cached clip (of every split: the runner picks the splits to run), sorted by
    shard then clip id; a clip without a reference of another source is already rejected. The
    first ``num_previews`` clips of the chosen splits that have a reference write a preview."""
    clips = [CacheClip(r["clip_id"], r["source"], r["source_digest"], r["split"], r["bucket"]) for r in rows]
    references = choose_references(clips, clips, cfg.seed, cfg.reference_pool)
    tasks = []
    for row in rows:
        task = BoostTask(clip_id=row["clip_id"], source=row["source"], source_digest=row["source_digest"],
                         split=row["split"], bucket=row["bucket"], shard=boost_shard(row["shard"]),
                         num_frames=int(row["num_frames"]))
        ref = references[row["clip_id"]]
        if ref is None:
            reach = "its split" if cfg.reference_pool == "same_split" else "the cache"
            task.reject(NO_OTHER_SOURCE, f"no clip of another source video in {reach} to take a character from "
                        f"(all come from {row['source']})")
        else:
            task.reference_clip_id, task.reference_source, task.reference_bucket = ref.clip_id, ref.source, ref.bucket
        tasks.append(task)
    tasks.sort(key=lambda t: (t.shard, t.clip_id))
    wanted = [t for t in tasks if t.ok and t.split in cfg.splits]
    for task in wanted[: cfg.num_previews]:
        task.preview = True
    return tasks
