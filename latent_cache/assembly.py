"""Packing finished samples into shards on the driver, as soon as a shard's clips are all done.

A shard is complete when each of its clips is encoded or rejected for a reason of its own data; a
clip rejected by the machinery (``stage_error``, ``worker_error``) leaves its shard unwritten, so
a rerun retries the clip and then writes the shard with it. The shard record (with the shard's
index rows) is written after the tar, and the samples are removed after the record: a crash at
any point leaves something a rerun completes.
"""

from __future__ import annotations

import json
import os

from anycharv.atomic import atomic_write_json
from anycharv.datasets import schema
from anycharv.datasets.shards import iter_tar_samples, write_shard
from anycharv.executor.task import RETRY_REASONS
from anycharv.latent_cache.layout import CacheLayout
from anycharv.latent_cache.plan import CacheTask


def read_json(path) -> dict | None:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def shard_done(layout: CacheLayout, shard: str) -> bool:
    record = read_json(layout.shard_state(shard))
    path = layout.shards / shard
    return record is not None and path.is_file() and path.stat().st_size == record.get("bytes")


def sample_done(layout: CacheLayout, task: CacheTask) -> dict | None:
    """The record of a clip a previous run finished (an ok one only with its sample still there)."""
    record = read_json(layout.sample_state(task.clip_id))
    if record is None or record.get("reason") in RETRY_REASONS:
        return None
    if record["status"] == "ok" and not os.path.isfile(record.get("sample_path", "")):
        return None
    return record


class ShardAssembler:
    def __init__(self, layout: CacheLayout, tasks: list[CacheTask]):
        self.layout = layout
        self.expected: dict[str, set[str]] = {}
        for task in tasks:
            self.expected.setdefault(task.shard, set()).add(task.clip_id)
        self.finished: dict[str, dict[str, dict]] = {shard: {} for shard in self.expected}
        self.written: list[str] = []
        self.published: list[dict] = []  # this run's records, as the workers returned them

    def publish(self, task: CacheTask) -> None:
        record = {"clip_id": task.clip_id, "status": task.status, "reason": task.reason, "detail": task.detail,
                  "shard": task.shard, "sample_path": task.sample_path, "sample_bytes": task.sample_bytes,
                  "num_frames": task.num_frames, "bucket": task.bucket, "split": task.split, "source": task.source,
                  "source_digest": task.source_digest}
        atomic_write_json(self.layout.sample_state(task.clip_id), record)
        self.published.append(record)
        self.add_record(record)

    def add_record(self, record: dict) -> None:
        shard = record["shard"]
        self.finished[shard][record["clip_id"]] = record
        if set(self.finished[shard]) == self.expected[shard]:
            self.pack(shard)

    def pack(self, shard: str) -> None:
        records = sorted(self.finished[shard].values(), key=lambda r: r["clip_id"])
        if any(r["reason"] in RETRY_REASONS for r in records):
            return
        ok = [r for r in records if r["status"] == "ok"]
        if not ok:
            return
        samples = []
        for r in ok:
            [(key, members)] = list(iter_tar_samples(r["sample_path"]))
            samples.append((key, members))
        rows = write_shard(self.layout.shards / shard, samples)
        by_key = {r["clip_id"]: r for r in ok}
        index_rows = [{
            "clip_id": row["key"], "set": "stage1", "shard": shard, "bucket": by_key[row["key"]]["bucket"],
            "split": by_key[row["key"]]["split"], "num_frames": by_key[row["key"]]["num_frames"],
            "source": by_key[row["key"]]["source"], "source_digest": by_key[row["key"]]["source_digest"],
            "schema_version": schema.SCHEMA_VERSION, "sample_offset": row["sample_offset"],
            "sample_size": row["sample_size"], "members": row["members"]} for row in rows]
        atomic_write_json(self.layout.shard_state(shard), {
            "shard": shard, "bytes": (self.layout.shards / shard).stat().st_size, "rows": index_rows})
        for r in ok:
            try:
                os.unlink(r["sample_path"])
            except FileNotFoundError:
                pass
        self.written.append(shard)


def index_rows(layout: CacheLayout, shards: set[str]) -> list[dict]:
    """The index rows of the planned ``shards`` that are complete."""
    rows = []
    for shard in sorted(shards):
        if shard_done(layout, shard):
            rows.extend(read_json(layout.shard_state(shard))["rows"])
    return rows
