"""Where the self-boost job keeps its files under its output folder ``OUT`` (by default
``CACHE/shards/boost``, where ``train --stage stage2 --data CACHE`` looks)::

    OUT/index.parquet                              one row per sample, set "selfboost" (shard paths
                                                   relative to OUT: ``shards_dir(OUT)`` is OUT itself)
    OUT/selfboost/<bucket>/<split>-NNNNNN.tar      complete shards, one per shard of the cache
    OUT/previews/<clip_id>.mp4                     original | generated, for the first few clips
    OUT/.work/samples/<clip_id>.tar                generated samples not yet packed into a shard
    OUT/.state/samples/<clip_id>.json              one record per finished clip (ok or rejected)
    OUT/.state/shards/<shard id>.json              one record per complete shard, with its index rows
    OUT/.state/job.json                            the key: settings, model, cache and VAE identities
    OUT/summary.json, OUT/config.yaml              the last run's figures and config
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from anycharv.atomic import TMP_PREFIX
from anycharv.datasets.shard_index import INDEX_NAME
from anycharv.latent_cache.layout import CacheLayout, JobLayout

SET_NAME = "selfboost"


def default_output(cache_dir: str | os.PathLike) -> Path:
    return CacheLayout.at(cache_dir).boost


@dataclass(frozen=True)
class BoostLayout(JobLayout):
    def create(self) -> "BoostLayout":
        for folder in (self.samples, self.sample_states, self.shard_states, self.previews):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def shards(self) -> Path:
        """What shard names (``selfboost/<bucket>/<split>-N.tar``) are relative to."""
        return self.root

    @property
    def index(self) -> Path:
        return self.root / INDEX_NAME

    @property
    def previews(self) -> Path:
        return self.root / "previews"

    def preview(self, clip_id: str) -> Path:
        return self.previews / f"{clip_id}.mp4"

    def sweep_temporary(self) -> int:
        """Remove the half-written files a killed run left (atomic writes' temporary names)."""
        removed = 0
        for folder in (self.root / SET_NAME, self.samples, self.previews, self.root / ".state"):
            for path in folder.rglob(f"{TMP_PREFIX}*"):
                path.unlink(missing_ok=True)
                removed += 1
        for path in self.root.glob(f"{TMP_PREFIX}*"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed
