"""The self-boost driver: a latent cache and a stage-1 model in, self-boost shards and their index
out, with the generation on the executor (one ``BoostStage``) and the packing on the driver
(``anycharv.latent_cache.assembly``, the cache job's packer, with set "selfboost").

Resumable like the cache: every finished clip leaves a record, shards are written when all their
clips are in, and a rerun with the same key (settings, model, cache, VAE) generates only what is
missing; another key in the same folder is refused (``cache_mismatch``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anycharv.atomic import atomic_write_json
from anycharv.config import dump_config
from anycharv.datasets import schema
from anycharv.datasets.sample_reader import SampleReader
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
from anycharv.latent_cache.identity import cache_encoder_source
from anycharv.latent_cache.layout import CacheLayout
from anycharv.self_boost.config import BoostJob
from anycharv.self_boost.layout import SET_NAME, BoostLayout, default_output
from anycharv.self_boost.model_source import ModelSource, cross_attention_dim, model_identity, vae_identity
from anycharv.self_boost.plan import NO_OTHER_SOURCE, RECORD_EXTRA, BoostTask, plan_tasks, read_cache_clips
from anycharv.self_boost.stages import BoostStage

log = logging.getLogger("anycharv.self_boost")


@dataclass
class BoostSummary:
    output: str
    cache: str
    model: str
    clips: int = 0  # planned in the chosen splits
    generated: int = 0
    reused: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    samples: int = 0  # in the index (every split done so far)
    shards: int = 0
    shards_written: int = 0
    shards_unfinished: int = 0  # a clip failed for a retryable reason: a rerun finishes them
    frames: int = 0
    cross_bucket: int = 0  # this run's pairs whose reference was resized from another bucket
    generate_s: float = 0.0
    clips_per_s: float = 0.0
    frames_per_s: float = 0.0
    total_s: float = 0.0
    ray_started: bool = False
    splits: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, int] = field(default_factory=dict)
    previews: list[str] = field(default_factory=list)
    rejected_clips: list[dict] = field(default_factory=list)


def check_model_fits(cache_dir: Path, model: ModelSource) -> None:
    """The model's context width must be the cache's CLIP embedding width: a model trained with
    other encoders than the cache's cannot use its references (checked before any worker starts)."""
    reader = SampleReader(cache_dir / "shards")
    try:
        sample = next(s for s in reader.samples if s.set == "stage1")
        width = int(reader.view(sample).array(schema.REF_CLIP, 3, 1).shape[-1])
    finally:
        reader.close()
    expected = cross_attention_dim(model)
    if width != expected:
        raise InputError(model.label, f"its denoising UNet takes {expected}-wide CLIP embeddings, the cache "
                         f"{cache_dir} holds {width}-wide ones (made with other encoders than the model's)",
                         code="model_mismatch")


KEY_PARTS = {"boost": "settings (boost.*)", "model": "model", "vae": "VAE", "cache": "latent cache"}


def _check_key(layout: BoostLayout, key: dict, resume: bool) -> None:
    """Refuse to mix samples of other settings, another model or another cache in one folder."""
    previous = read_json(layout.job_state)
    if previous is not None and previous != key and resume:
        differ = [k for k in KEY_PARTS if key.get(k) != previous.get(k)]
        what = "; ".join(f"{KEY_PARTS[k]} was {previous.get(k)}, now {key.get(k)}" for k in differ)
        raise InputError(str(layout.root), f"holds self-boost samples that this run's would not match ({what}); "
                         "use another --output, or runtime.resume=false to regenerate it", code="cache_mismatch")
    atomic_write_json(layout.job_state, key)


def _forget(layout: BoostLayout) -> int:
    """Drop every record and unpacked sample of earlier runs (``runtime.resume=false``): their
    shards leave the index until this run writes them again."""
    removed = 0
    for folder, pattern in ((layout.sample_states, "*.json"), (layout.shard_states, "*.json"),
                            (layout.samples, "*.tar")):
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _progress(total: int, enabled: bool):
    if not enabled or not total or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="self-boost", unit="clip")


def run_self_boost(job: BoostJob, cache_dir: str, model: ModelSource, output_dir: str | None = None,
                   vae: str | None = None) -> BoostSummary:
    """Generate the self-boost pairs of the cache ``cache_dir`` with ``model`` into ``output_dir``
    (default ``cache_dir/shards/boost``); ``vae``: a VAE folder instead of the cache's own."""
    started = time.perf_counter()
    cache_root = Path(cache_dir).expanduser().resolve()
    rows = read_cache_clips(cache_root)
    encoders = cache_encoder_source(cache_root)
    check_model_fits(cache_root, model)
    cache_layout = CacheLayout.at(cache_root)
    identity = {"model": model_identity(model),
                "vae": vae_identity(vae) or (read_json(cache_layout.encoders) or {}).get("identity")}
    key = {"boost": job.content_hash(), **identity, "cache": read_json(cache_layout.job_state)}

    layout = BoostLayout.at(output_dir or default_output(cache_root)).create()
    swept = layout.sweep_temporary()
    if swept:
        log.info("removed %d unfinished file(s) of an interrupted run", swept)
    _check_key(layout, key, job.runtime.resume)
    if not job.runtime.resume:
        _forget(layout)
    dump_config(job, layout.root / "config.yaml")

    planned = plan_tasks(rows, job.boost)
    all_shards = shard_members(planned)
    tasks = [t for t in planned if t.split in job.boost.splits]
    done_shards = {t.shard for t in tasks if shard_done(layout, t.shard, all_shards[t.shard])}
    open_tasks = [t for t in tasks if t.shard not in done_shards]
    assembler = ShardAssembler(layout, open_tasks, set_name=SET_NAME, extra_fields=RECORD_EXTRA)
    summary = BoostSummary(output=str(layout.root), cache=str(cache_root), model=model.label, clips=len(tasks))
    summary.reused = sum(len(read_json(layout.shard_state(s))["rows"]) for s in done_shards)
    pending = []
    for task in open_tasks:
        record = sample_done(layout, task) if task.ok else None
        if not task.ok:
            assembler.publish(task)  # rejected by the plan: recorded afresh, the cache may have grown
        elif record is None or record.get("reason") == NO_OTHER_SOURCE:
            pending.append(task)
        else:
            summary.reused += 1
            assembler.add_record(record)

    generate_started = time.perf_counter()
    if pending:
        stage = BoostStage(job.boost, model, encoders, str(cache_root), str(layout.samples), str(layout.previews),
                           identity, vae=vae, device=job.runtime.device, dtype=job.runtime.dtype,
                           vae_chunk=job.runtime.vae_chunk)
        bar = _progress(len(pending), job.runtime.progress)

        def publish(task: BoostTask) -> None:
            assembler.publish(task)
            if bar is not None:
                bar.update()

        try:
            with make_executor(job.runtime) as executor:
                executor.run(pending, [stage], publish)
                summary.ray_started = executor.connected
        finally:
            if bar is not None:
                bar.close()
    summary.generate_s = round(time.perf_counter() - generate_started, 3)

    rows_out = index_rows(layout, all_shards)
    write_index(rows_out, layout.index)
    states = [read_json(layout.sample_state(t.clip_id)) or {} for t in tasks]
    rejected = [s for s in states if s.get("status") == "rejected"]
    generated = [r for r in assembler.published if r["status"] == "ok"]
    summary.generated = len(generated)
    summary.cross_bucket = sum(r["reference_bucket"] != r["bucket"] for r in generated)
    summary.rejected = dict(Counter(s["reason"] for s in rejected))
    summary.rejected_clips = [{k: s[k] for k in ("clip_id", "reason", "detail")} for s in rejected]
    summary.samples = len(rows_out)
    summary.shards = len({r["shard"] for r in rows_out})
    summary.shards_written = len(assembler.written)
    summary.frames = sum(r["num_frames"] for r in rows_out)
    summary.splits = dict(Counter(r["split"] for r in rows_out))
    summary.buckets = dict(Counter(r["bucket"] for r in rows_out))
    summary.previews = sorted(str(layout.preview(t.clip_id)) for t in tasks
                              if t.preview and layout.preview(t.clip_id).is_file())
    if summary.generated and summary.generate_s > 0:
        summary.clips_per_s = round(summary.generated / summary.generate_s, 5)
        summary.frames_per_s = round(sum(r["num_frames"] for r in generated) / summary.generate_s, 3)
    unfinished = {t.shard for t, s in zip(tasks, states) if not s or s.get("reason") in RETRY_REASONS}
    unfinished -= {r["shard"] for r in rows_out}
    summary.shards_unfinished = len(unfinished)
    if unfinished:
        log.warning("%d self-boost shard(s) are not complete (clips failed for a retryable reason); rerun to "
                    "finish them", len(unfinished))
    if summary.rejected.get(NO_OTHER_SOURCE):
        log.warning("%d clip(s) have no clip of another source video to take a character from (%s)",
                    summary.rejected[NO_OTHER_SOURCE], job.boost.reference_pool)
    summary.total_s = round(time.perf_counter() - started, 3)
    atomic_write_json(layout.summary, asdict(summary))
    return summary
