"""The latent-cache driver: a preprocessing output's ``ok`` clips in, shards and their index out,
with the encoding on the executor (one ``EncodeStage``) and the packing on the driver."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from anycharv.atomic import atomic_write_json
from anycharv.config import dump_config
from anycharv.datasets.shard_index import write_index
from anycharv.errors import InputError
from anycharv.executor import make_executor
from anycharv.executor.task import RETRY_REASONS
from anycharv.latent_cache.assembly import (
    ShardAssembler,
    index_rows,
    read_json,
    sample_done,
    shard_done,
    shard_members,
)
from anycharv.latent_cache.config import CacheJob, EncoderSource
from anycharv.latent_cache.identity import encoder_identity
from anycharv.latent_cache.layout import CacheLayout
from anycharv.latent_cache.plan import plan_tasks, read_ok_clips
from anycharv.latent_cache.stages import EncodeStage

log = logging.getLogger("anycharv.latent_cache")


@dataclass
class CacheSummary:
    output: str
    clips: int = 0
    encoded: int = 0
    reused: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    shards: int = 0
    shards_written: int = 0
    shards_unfinished: int = 0  # a clip failed for a retryable reason: a rerun finishes them
    frames: int = 0
    bytes_per_sample: float = 0.0
    encode_s: float = 0.0
    clips_per_s: float = 0.0
    frames_per_s: float = 0.0
    total_s: float = 0.0
    ray_started: bool = False
    splits: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, int] = field(default_factory=dict)
    rejected_clips: list[dict] = field(default_factory=list)


def _check_key(layout: CacheLayout, key: dict, resume: bool) -> None:
    """Refuse to mix samples of different settings or encoders in one folder."""
    previous = read_json(layout.job_state)
    if previous is not None and previous != key and resume:
        raise InputError(str(layout.root), "holds a cache made with other settings or encoders "
                                           f"({previous}); use another --output, or runtime.resume=false "
                                           "to rebuild it", code="cache_mismatch")
    atomic_write_json(layout.job_state, key)


def run_cache(job: CacheJob, input_dir: str, output_dir: str, source: EncoderSource) -> CacheSummary:
    started = time.perf_counter()
    clips = read_ok_clips(input_dir)
    if not clips:
        raise InputError(str(input_dir), "the manifest has no ok clip to cache", code="no_clips")
    tasks = plan_tasks(clips, job.cache)
    identity = encoder_identity(source)
    for task in tasks:
        task.encoders = identity
    layout = CacheLayout.at(output_dir).create()
    swept = layout.sweep_temporary()
    if swept:
        log.info("removed %d unfinished file(s) of an interrupted run", swept)
    _check_key(layout, {"cache": job.content_hash(), "encoders": identity}, job.runtime.resume)
    dump_config(job, layout.root / "config.yaml")
    atomic_write_json(layout.encoders, {"source": asdict(source), "identity": identity})

    shards = shard_members(tasks)
    done_shards = {s for s, clips in shards.items() if job.runtime.resume and shard_done(layout, s, clips)}
    open_tasks = [t for t in tasks if t.shard not in done_shards]
    assembler = ShardAssembler(layout, open_tasks)
    summary = CacheSummary(output=str(layout.root), clips=len(tasks))
    pending = []
    for task in open_tasks:
        record = sample_done(layout, task) if job.runtime.resume else None
        if record is None:
            pending.append(task)
        else:
            summary.reused += 1
            assembler.add_record(record)

    encode_started = time.perf_counter()
    if pending:
        stage = EncodeStage(job.cache, source, str(layout.samples), device=job.runtime.device,
                            vae_chunk=job.runtime.vae_chunk)
        with make_executor(job.runtime) as executor:
            executor.run(pending, [stage], assembler.publish)
            summary.ray_started = executor.connected
    summary.encode_s = round(time.perf_counter() - encode_started, 3)

    rows = index_rows(layout, shards)
    write_index(rows, layout.index)
    states = [read_json(layout.sample_state(t.clip_id)) or {} for t in tasks]
    rejected = [s for s in states if s.get("status") == "rejected"]
    encoded = [r for r in assembler.published if r["status"] == "ok"]  # the workers' copies, not ``pending``
    summary.encoded = len(encoded)
    summary.rejected = dict(Counter(s["reason"] for s in rejected))
    summary.rejected_clips = [{k: s[k] for k in ("clip_id", "reason", "detail")} for s in rejected]
    summary.samples = len(rows)
    summary.shards = len({r["shard"] for r in rows})
    summary.shards_written = len(assembler.written)
    summary.frames = sum(r["num_frames"] for r in rows)
    summary.bytes_per_sample = round(sum(r["sample_size"] for r in rows) / max(len(rows), 1), 1)
    summary.splits = dict(Counter(r["split"] for r in rows))
    summary.buckets = dict(Counter(r["bucket"] for r in rows))
    if summary.encoded and summary.encode_s > 0:
        summary.clips_per_s = round(summary.encoded / summary.encode_s, 5)
        summary.frames_per_s = round(sum(r["num_frames"] for r in encoded) / summary.encode_s, 3)
    unfinished = {t.shard for t, s in zip(tasks, states) if not s or s.get("reason") in RETRY_REASONS}
    unfinished -= {r["shard"] for r in rows}
    summary.shards_unfinished = len(unfinished)
    if unfinished:
        log.warning("%d shard(s) are not complete (clips failed for a retryable reason); rerun to finish them",
                    len(unfinished))
    summary.total_s = round(time.perf_counter() - started, 3)
    atomic_write_json(layout.summary, asdict(summary))
    return summary

