"""Where a cache job keeps its files under its output folder ``OUT``::

    OUT/shards/stage1/<bucket>/<split>-NNNNNN.tar  complete shards (each appears in one rename)
    OUT/shards/index.parquet                       one row per sample (``anycharv.datasets.shard_index``)
    OUT/.work/samples/<clip_id>.tar                encoded samples not yet packed into a shard
    OUT/.state/samples/<clip_id>.json              one record per finished clip (ok or rejected)
    OUT/.state/shards/<shard id>.json              one record per complete shard, with its index rows
    OUT/.state/job.json                            the cache key the folder was made with
    OUT/summary.json, OUT/config.yaml              the last run's figures and config
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from anycharv.atomic import TMP_PREFIX


@dataclass(frozen=True)
class CacheLayout:
    root: Path

    @classmethod
    def at(cls, output: str | os.PathLike) -> "CacheLayout":
        return cls(Path(output).expanduser().resolve())

    def create(self) -> "CacheLayout":
        for folder in (self.shards, self.samples, self.sample_states, self.shard_states):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def index(self) -> Path:
        return self.shards / "index.parquet"

    @property
    def samples(self) -> Path:
        return self.root / ".work" / "samples"

    @property
    def sample_states(self) -> Path:
        return self.root / ".state" / "samples"

    @property
    def shard_states(self) -> Path:
        return self.root / ".state" / "shards"

    @property
    def job_state(self) -> Path:
        return self.root / ".state" / "job.json"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def sweep_temporary(self) -> int:
        """Remove the half-written files a killed run left (atomic writes' temporary names)."""
        removed = 0
        for folder in (self.shards, self.samples, self.root / ".state"):
            for path in folder.rglob(f"{TMP_PREFIX}*"):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def sample_state(self, clip_id: str) -> Path:
        return self.sample_states / f"{clip_id}.json"

    def shard_state(self, shard: str) -> Path:
        return self.shard_states / (shard.replace("/", "__").removesuffix(".tar") + ".json")
