"""Batches for a stage from the latent cache: one dataset per resolution bucket, each batch from one
bucket, and a position that a checkpoint stores so a resumed run reads exactly what the
uninterrupted one would have.

The bucket of step ``s`` is drawn from a generator seeded by (seed, s), weighted by the buckets'
sizes: the same on every rank (DDP needs equal shapes per step) and independent of resumption.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from anycharv.datasets.sample_reader import SampleReader, shards_dir
from anycharv.datasets.sampling import ShardDataset, epoch_order
from anycharv.errors import InputError
from anycharv.training.config import TrainConfig

log = logging.getLogger("anycharv.training")


def boost_dir(cfg: TrainConfig, data_dir: str | Path) -> Path:
    return Path(cfg.data.boost_dir).expanduser() if cfg.data.boost_dir else Path(data_dir) / "shards" / "boost"


def split_buckets(data_dir: str | Path, cfg: TrainConfig, split: str) -> list[str]:
    """The buckets of ``split`` the stage can read (the set stage 2 reads is the self-boost one)."""
    if cfg.stage == "stage2":
        root = boost_dir(cfg, data_dir)
        if not (shards_dir(root) / "index.parquet").is_file():
            raise InputError(str(root), "no self-boost shards here: stage 2 trains on self-boost pairs (run "
                             "`anycharv self-boost --model STAGE1_RUN --data DATA` first, or set data.boost_dir)",
                             code="no_boost_shards")
        reader, set_name = SampleReader(shards_dir(root)), "selfboost"
    else:
        reader, set_name = SampleReader(shards_dir(data_dir)), "stage1"
    found = sorted({s.bucket for s in reader.samples if s.set == set_name and s.split == split})
    if cfg.data.buckets:
        missing = [b for b in cfg.data.buckets if b not in found]
        if missing:
            raise InputError(str(data_dir), f"no {split} samples in bucket(s) {missing} (has {found})",
                             code="bad_bucket")
        return list(cfg.data.buckets)
    return found


def make_dataset(data_dir: str | Path, cfg: TrainConfig, split: str, bucket: str, *, rank: int | None = None,
                 world_size: int | None = None, validation: bool = False, seed: int | None = None) -> ShardDataset:
    """The stage's dataset of one bucket. ``validation``: posterior means, the fine mask, each sample once."""
    from anycharv.datasets.stage1 import Stage1ImageDataset, Stage1VideoDataset
    from anycharv.datasets.stage2 import Stage2Dataset

    d = cfg.data
    common = dict(bucket=bucket, strict=d.strict, seed=cfg.seed if seed is None else seed, rank=rank,
                  world_size=world_size, sample_posterior=d.sample_posterior and not validation,
                  uneven="none" if validation else "pad")
    if cfg.stage == "stage1_image":
        return Stage1ImageDataset(data_dir, split, augment_prob=0.0 if validation else d.augment_prob, **common)
    if cfg.stage == "stage1_video":
        return Stage1VideoDataset(data_dir, split, num_frames=d.num_frames, sample_rate=d.sample_rate,
                                  augment_prob=0.0 if validation else d.augment_prob, **common)
    return Stage2Dataset(data_dir, boost_dir(cfg, data_dir), split, num_frames=d.num_frames,
                         sample_rate=d.sample_rate, **common)


class BucketBatches:
    """Endless batches of the train split over the configured buckets, with a resumable position
    ``{bucket: {"epoch": e, "batches": n}}`` (batches taken in epoch ``e``)."""

    def __init__(self, data_dir: str | Path, cfg: TrainConfig, *, rank: int, world_size: int, loader_workers: int = 0,
                 position: dict | None = None):
        self.cfg, self.batch_size, self.loader_workers = cfg, cfg.data.batch_size, loader_workers
        self.datasets: dict[str, ShardDataset] = {}
        slots = world_size * max(loader_workers, 1)
        for bucket in split_buckets(data_dir, cfg, "train"):
            dataset = make_dataset(data_dir, cfg, "train", bucket, rank=rank, world_size=world_size)
            per_slot = len(epoch_order(len(dataset.samples), seed=0, epoch=0, world_size=world_size,
                                       num_workers=max(loader_workers, 1))) // slots
            if per_slot < self.batch_size:
                log.warning("bucket %s left out: %d samples per rank and loader worker, batch size %d", bucket,
                            per_slot, self.batch_size)
                continue
            self.datasets[bucket] = dataset
        if not self.datasets:
            raise InputError(str(data_dir), f"no bucket of the train split has {self.batch_size} samples per rank "
                             f"and loader worker ({world_size} rank(s), {max(loader_workers, 1)} worker(s)); lower "
                             "data.batch_size or use fewer workers", code="too_few_samples")
        self.buckets = sorted(self.datasets)
        sizes = np.array([len(self.datasets[b].samples) for b in self.buckets], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.position = {b: {"epoch": 0, "batches": 0} for b in self.buckets}
        for bucket, pos in (position or {}).items():
            if bucket in self.position:
                self.position[bucket] = {"epoch": int(pos["epoch"]), "batches": int(pos["batches"])}
        self._iters: dict[str, Iterator] = {}

    def bucket_of(self, step: int) -> str:
        if len(self.buckets) == 1:
            return self.buckets[0]
        rng = np.random.default_rng([self.cfg.seed, int(step), 7])
        return self.buckets[int(rng.choice(len(self.buckets), p=self.weights))]

    def _start(self, bucket: str) -> Iterator:
        pos = self.position[bucket]
        dataset = self.datasets[bucket]
        dataset.resume_at(pos["epoch"], pos["batches"], self.batch_size)
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, drop_last=True,
                                             num_workers=self.loader_workers)
        return iter(loader)

    def next(self, step: int) -> tuple[str, dict]:
        """The batch of optimizer step ``step`` (0-based) and its bucket."""
        bucket = self.bucket_of(step)
        for _ in range(2):
            if bucket not in self._iters:
                self._iters[bucket] = self._start(bucket)
            try:
                batch = next(self._iters[bucket])
            except StopIteration:
                del self._iters[bucket]
                self.position[bucket] = {"epoch": self.position[bucket]["epoch"] + 1, "batches": 0}
                continue
            self.position[bucket]["batches"] += 1
            return bucket, batch
        raise InputError(bucket, "an epoch of this bucket yields no batch", code="too_few_samples")

    def state(self) -> dict:
        return {b: dict(p) for b, p in self.position.items()}

    def epoch(self) -> float:
        """Epochs done, summed over buckets weighted by size (for the logs)."""
        total = 0.0
        for w, b in zip(self.weights, self.buckets):
            per_epoch = max(len(self.datasets[b].samples) // max(self.batch_size, 1), 1)
            total += w * (self.position[b]["epoch"] + self.position[b]["batches"] / per_epoch)
        return round(float(total), 4)
