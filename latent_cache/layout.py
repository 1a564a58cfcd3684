"""Where a cache job keeps its files under its output folder ``OUT``::

    OUT/shards/stage1/<bucket>/<split>-NNNNNN.tar  complete shards (each appears in one rename)
    OUT/shards/index.parquet                       one row per sample (``anycharv.datasets.shard_index``)
    OUT/shards/boost/                              the self-boost job's default output (its own index,
                                                   shards and state; never touched by the cache job)
    OUT/.work/samples/<clip_id>.tar                encoded samples not yet packed into a shard
    OUT/.state/samples/<clip_id>.json              one record per finished clip (ok or rejected)
    OUT/.state/shards/<shard id>.json              one record per complete shard, with its index rows
    OUT/.state/job.json                            the cache key the folder was made with
    OUT/encoders.json                              where the encoders came from and their identity
                                                   (training validation and self-boost load them from it)
    OUT/summary.json, OUT/config.yaml              the last run's figures and config
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from anycharv.atomic import TMP_PREFIX


@dataclass(frozen=True)
class JobLayout:
    """The work and state files of a job that packs samples into shards (the cache, self-boost):
    ``.work/samples/``, ``.state/{samples,shards,job.json}``, ``summary.json``."""

    root: Path

    @classmethod
    def at(cls, output: str | os.PathLike):
        return cls(Path(output).expanduser().resolve())

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

    def sample_state(self, clip_id: str) -> Path:
        return self.sample_states / f"{clip_id}.json"

    def shard_state(self, shard: str) -> Path:
        return self.shard_states / (shard.replace("/", "__").removesuffix(".tar") + ".json")


@dataclass(frozen=True)
class CacheLayout(JobLayout):
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
    def boost(self) -> Path:
        return self.shards / "boost"

    @property
    def encoders(self) -> Path:
        return self.root / "encoders.json"

    def sweep_temporary(self) -> int:
        """Remove the half-written files a killed run left (atomic writes' temporary names), except
        under ``shards/boost``: those belong to a self-boost run that may be going on."""
        removed = 0
        for folder in (self.shards, self.samples, self.root / ".state"):
            for path in folder.rglob(f"{TMP_PREFIX}*"):
                if path.is_relative_to(self.boost):
                    continue
                path.unlink(missing_ok=True)
                removed += 1
        return removed
