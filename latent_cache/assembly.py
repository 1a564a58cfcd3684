"""Packing finished samples into shards on the driver, as soon as a shard's clips are all done
(the latent cache's ``stage1`` set and the self-boost job's ``selfboost`` set share it).

A shard is complete when each of its clips is encoded or rejected for a reason of its own data; a
clip rejected by the machinery (``stage_error``, ``worker_error``) leaves its shard unwritten, so
a rerun retries the clip and then writes the shard with it. The shard record (with the shard's
index rows) is written after the tar, and the samples are removed after the record: a crash at
any point leaves something a rerun completes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Protocol, Sequence

from anycharv.atomic import atomic_write_json
from anycharv.datasets import schema
from anycharv.datasets.shards import iter_tar_samples, write_shard
from anycharv.executor.task import RETRY_REASONS, Task

# What a task's record holds besides the job's own ``extra_fields``.
RECORD_FIELDS = ("clip_id", "status", "reason", "detail", "shard", "sample_path", "sample_bytes", "num_frames",
                 "bucket", "split", "source", "source_digest")


class ShardLayout(Protocol):
    """What the packer needs of a job's folder (``CacheLayout``, the self-boost layout): shard paths
    are relative to ``shards``."""

    @property
    def shards(self) -> Path: ...

    def sample_state(self, clip_id: str) -> Path: ...

    def shard_state(self, shard: str) -> Path: ...


def read_json(path) -> dict | None:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def shard_done(layout: ShardLayout, shard: str, clip_ids: Iterable[str] | None = None) -> bool:
    """The shard is written whole and, with ``clip_ids``, was made from exactly those planned clips
    (an input that grew moves clips between shards: such a shard must be written again)."""
    record = read_json(layout.shard_state(shard))
    path = layout.shards / shard
    if record is None or not path.is_file() or path.stat().st_size != record.get("bytes"):
        return False
    if clip_ids is None:
        return True
    made_from = record.get("clips", [row["clip_id"] for row in record["rows"]])  # older records: the ok rows
    return sorted(made_from) == sorted(clip_ids)


def shard_members(tasks: Iterable[Task]) -> dict[str, set[str]]:
    """Shard -> the clip ids planned into it."""
    members: dict[str, set[str]] = {}
    for task in tasks:
        members.setdefault(task.shard, set()).add(task.clip_id)
    return members


def sample_done(layout: ShardLayout, task: Task) -> dict | None:
    """The record of a clip a previous run finished (an ok one only with its sample still there)."""
    record = read_json(layout.sample_state(task.clip_id))
    if record is None or record.get("reason") in RETRY_REASONS:
        return None
    if record["status"] == "ok" and not os.path.isfile(record.get("sample_path", "")):
        return None
    return record


class ShardAssembler:
    """Records each finished task (``.state/samples``) and writes a shard of set ``set_name`` once
    all its clips are in. Tasks have the ``RECORD_FIELDS`` plus ``extra_fields``, which go into the
    records too (the index takes the common ones)."""

    def __init__(self, layout: ShardLayout, tasks: Sequence[Task], set_name: str = "stage1",
                 extra_fields: Sequence[str] = ()):
        self.layout = layout
        self.set_name, self.extra_fields = set_name, tuple(extra_fields)
        self.expected = shard_members(tasks)
        self.finished: dict[str, dict[str, dict]] = {shard: {} for shard in self.expected}
        self.written: list[str] = []
        self.published: list[dict] = []  # this run's records, as the workers returned them

    def publish(self, task: Task) -> None:
        record = {name: getattr(task, name) for name in RECORD_FIELDS + self.extra_fields}
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
            "clip_id": row["key"], "set": self.set_name, "shard": shard, "bucket": by_key[row["key"]]["bucket"],
            "split": by_key[row["key"]]["split"], "num_frames": by_key[row["key"]]["num_frames"],
            "source": by_key[row["key"]]["source"], "source_digest": by_key[row["key"]]["source_digest"],
            "schema_version": schema.SCHEMA_VERSION, "sample_offset": row["sample_offset"],
            "sample_size": row["sample_size"], "members": row["members"]} for row in rows]
        atomic_write_json(self.layout.shard_state(shard), {
            "shard": shard, "bytes": (self.layout.shards / shard).stat().st_size, "rows": index_rows,
            "clips": sorted(self.expected[shard])})
        for r in ok:
            try:
                os.unlink(r["sample_path"])
            except FileNotFoundError:
                pass
        self.written.append(shard)


def index_rows(layout: ShardLayout, members: dict[str, set[str]]) -> list[dict]:
    """The index rows of the planned shards (shard -> planned clip ids) that are complete."""
    rows = []
    for shard in sorted(members):
        if shard_done(layout, shard, members[shard]):
            rows.extend(read_json(layout.shard_state(shard))["rows"])
    return rows
