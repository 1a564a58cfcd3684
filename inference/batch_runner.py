"""The batch-inference driver: a job table in, one mp4 per job and ``results.parquet`` out, with the
work on the executor (one ``BatchInferStage``: the pipeline and the preprocessing models load once
per worker) and the bookkeeping on the driver.

Output folder ``OUT``:

* ``videos/<output>``: each finished job's mp4 (``output`` column, default ``<job_id>.mp4``);
* ``previews/<job_id>.png``: source | result | reference at the middle frame;
* ``results.parquet``: one row per table row (this run's, and earlier runs' for skipped jobs);
* ``summary.json``, ``config.yaml``: this run's counts and config;
* ``.state/jobs/<job_id>.json``: each finished job's result and key; ``.state/sources.json``: input
  digests by path, size and mtime (a rerun does not hash unchanged files again).

Idempotent per job: a rerun skips a job whose key (its row's settings, its inputs' content, the
model and the shared settings) is unchanged and whose result is still there (an ok job's mp4, or a
rejection for its input); a changed row, a changed input file or a failed job runs again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from anycharv.atomic import TMP_PREFIX, atomic_path, atomic_write_json
from anycharv.config import config_hash, dump_config
from anycharv.errors import InputError
from anycharv.executor import make_executor
from anycharv.executor.task import RETRY_REASONS
from anycharv.inference.batch_config import DEFAULT_SIZE, NOT_IN_KEY, BatchJob
from anycharv.inference.batch_jobs import BatchTask, job_key, model_identity, plan_jobs, read_job_table
from anycharv.inference.batch_stage import PRESETS, BatchInferStage, stage_resources
from anycharv.output_paths import check_output_dir

log = logging.getLogger("anycharv.inference.batch")

RESULTS = "results.parquet"
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
RESULT_COLUMNS = ("job_id", "row", "status", "reason", "detail", "output", "seconds", "frames", "person", "fps",
                  "key", "reference", "video", "preview", "audio", "steps", "guidance", "seed", "size", "start",
                  "max_frames", "reused")
SUMMARY_ROW_KEYS = ("job_id", "status", "reason", "detail", "output", "seconds", "frames")


@dataclass
class BatchSummary:
    output: str
    jobs_file: str
    results: str  # OUT/results.parquet
    model: str
    jobs: int = 0  # rows of the table
    ok: int = 0  # in results.parquet (this run's and reused)
    rejected: int = 0  # input problems: a rerun with the same inputs gives the same
    failed: int = 0  # machinery (stage_error, worker_error): a rerun tries again
    reused: int = 0  # finished by an earlier run with the same key, skipped
    ran: int = 0  # sent to the workers this run
    frames: int = 0  # output frames written this run
    setup_s: float = 0.0
    run_s: float = 0.0  # the workers' run (with their setup unless runtime.warm_start)
    jobs_per_hour: float = 0.0  # this run's finished jobs per hour of run_s
    seconds_per_frame: float = 0.0  # run_s per output frame written this run
    total_s: float = 0.0
    ray_started: bool = False
    reasons: dict[str, int] = field(default_factory=dict)  # reason -> rows (rejected and failed)
    ignored_columns: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # absolute paths of the ok jobs' mp4s
    previews: list[str] = field(default_factory=list)  # absolute paths, in the order of ``outputs``
    rows: list[dict[str, Any]] = field(default_factory=list)  # SUMMARY_ROW_KEYS per table row


@dataclass(frozen=True)
class BatchLayout:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> "BatchLayout":
        return cls(Path(root))

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    @property
    def previews(self) -> Path:
        return self.root / "previews"

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    @property
    def jobs_state(self) -> Path:
        return self.root / ".state" / "jobs"

    @property
    def sources(self) -> Path:
        return self.root / ".state" / "sources.json"

    def job_state(self, stem: str) -> Path:
        return self.jobs_state / f"{stem}.json"

    def preview(self, stem: str) -> Path:
        return self.previews / f"{stem}.png"

    def create(self) -> "BatchLayout":
        for folder in (self.videos, self.previews, self.jobs_state):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def sweep_temporary(self) -> int:
        """Remove what a killed run left half-written (temporary names only)."""
        removed = 0
        for folder in (self.videos, self.previews, self.jobs_state, self.sources.parent):
            for path in folder.rglob(f"{TMP_PREFIX}*"):
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed += 1
        for path in self.root.glob(f"{TMP_PREFIX}*"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def check_model(weights: str | None, preset: str | None) -> str:
    """A label of the model; InputError when neither or both are given, or they name nothing."""
    if weights and preset:
        raise InputError("--weights", f"give --weights or --preset, not both (got {weights!r} and {preset!r})",
                         code="bad_option")
    if preset is not None:
        if preset not in PRESETS:
            raise InputError("--preset", f"unknown preset {preset!r} (available: {', '.join(PRESETS)})",
                             code="bad_preset")
        return f"preset {preset} (random weights)"
    if not weights:
        raise InputError("--weights", "give --weights DIR_OR_HUB_ID, or --preset tiny for random tiny weights",
                         code="no_model")
    if not Path(weights).expanduser().exists() and not _HUB_ID.fullmatch(weights):
        raise InputError(f"--weights {weights}", "no such folder (and not a hub id owner/name)", code="no_model")
    return str(weights)


def check_model_files(job: BatchJob) -> None:
    for name in ("vae", "image_encoder"):
        value = getattr(job.batch, name)
        if value and not (Path(value).expanduser() / "config.json").is_file():
            raise InputError(f"--{name.replace('_', '-')} {value}", "no config.json in this folder", code="no_model")


# ----------------------------------------------------------------------------------------- digests
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def file_digests(paths: set[str], cache_file: Path) -> dict[str, str]:
    """sha256 of each file, remembered in ``cache_file`` by path, size and mtime."""
    from anycharv.hashing import sha256_file

    cache = _read_json(cache_file) or {}
    out, changed = {}, False
    for path in sorted(paths):
        st = os.stat(path)
        entry = cache.get(path)
        if not entry or entry.get("size") != st.st_size or entry.get("mtime_ns") != st.st_mtime_ns:
            entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}
            cache[path], changed = entry, True
        out[path] = entry["sha256"]
    if changed:
        atomic_write_json(cache_file, cache)
    return out


def shared_key(job: BatchJob, weights: str | None, preset: str | None) -> dict[str, Any]:
    """What every job's key holds besides its row: the model, the shared settings and the
    preprocessing models that prepare the targets."""
    from anycharv.preprocessing.keys import section_payload

    return {"model": model_identity(weights, preset, job.batch.vae, job.batch.image_encoder),
            "settings": config_hash(job.batch, exclude=NOT_IN_KEY), "detect": section_payload(job.detect),
            "pose": section_payload(job.pose), "mask": section_payload(job.mask) if job.batch.ref_segment else None}


# ----------------------------------------------------------------------------------------- rows
def status_of(task: BatchTask) -> str:
    if task.ok:
        return "ok"
    return "failed" if task.reason in RETRY_REASONS else "rejected"


def result_row(task: BatchTask, layout: BatchLayout) -> dict[str, Any]:
    ok = task.ok
    return {
        "job_id": task.job_id, "row": task.row, "status": status_of(task), "reason": task.reason or None,
        "detail": task.detail or None, "output": f"videos/{task.output}" if ok else None,
        "seconds": float(task.seconds), "frames": int(task.frames) if ok else 0,
        "person": task.track_id if task.track_id is not None else task.person, "fps": task.fps or None,
        "key": task.key or None, "reference": task.reference or None, "video": task.video or None,
        "preview": f"previews/{task.stem}.png" if ok and layout.preview(task.stem).is_file() else None,
        "audio": task.audio or None, "steps": task.steps, "guidance": task.guidance, "seed": task.seed,
        "size": task.size, "start": task.start, "max_frames": task.max_frames, "reused": False,
    }


def write_results(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([
        ("job_id", pa.string()), ("row", pa.int32()), ("status", pa.string()), ("reason", pa.string()),
        ("detail", pa.string()), ("output", pa.string()), ("seconds", pa.float64()), ("frames", pa.int32()),
        ("person", pa.int32()), ("fps", pa.float64()), ("key", pa.string()), ("reference", pa.string()),
        ("video", pa.string()), ("preview", pa.string()), ("audio", pa.string()), ("steps", pa.int32()),
        ("guidance", pa.float64()), ("seed", pa.int64()), ("size", pa.int32()), ("start", pa.int32()),
        ("max_frames", pa.int32()), ("reused", pa.bool_()),
    ])
    table = pa.Table.from_pylist([{k: r.get(k) for k in RESULT_COLUMNS} for r in rows], schema=schema)
    with atomic_path(path, keep_suffix=True) as tmp:
        pq.write_table(table, tmp)


def _finished(record: dict | None, key: str, layout: BatchLayout) -> bool:
    """Whether an earlier run's record stands for this job: same key, and its mp4 still there for an
    ok job (a rejection for the job's input stands as it is; a failure is retried)."""
    if not record or record.get("key") != key:
        return False
    if record.get("status") == "ok":
        return bool(record.get("output")) and (layout.root / record["output"]).is_file()
    return record.get("status") == "rejected"


def _progress(total: int, enabled: bool):
    if not enabled or not total or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="batch", unit="job")


# ----------------------------------------------------------------------------------------- run
def run_batch(job: BatchJob, jobs_file: str, output: str, weights: str | None = None,
              preset: str | None = None) -> BatchSummary:
    """Run every row of the job table ``jobs_file`` with ``weights`` (our component folders, an
    official release folder or hub id) or ``preset`` ("tiny": random tiny networks) into the folder
    ``output``. Table-level problems raise ``InputError``; per-job problems are rows of
    ``results.parquet`` and the batch goes on."""
    started = time.perf_counter()
    label = check_model(weights, preset)
    check_model_files(job)
    table = read_job_table(jobs_file)
    root = check_output_dir(output, "output")
    layout = BatchLayout.at(root).create()
    swept = layout.sweep_temporary()
    if swept:
        log.info("removed %d unfinished file(s) of an interrupted run", swept)
    if table.ignored_columns:
        log.warning("job table %s: ignoring column(s) %s", table.path, ", ".join(table.ignored_columns))
    if preset:
        log.warning("preset %s: RANDOM weights, the generated regions are meaningless", preset)
    dump_config(job, root / "config.yaml")

    default_size = job.batch.size or DEFAULT_SIZE[preset or "weights"]
    tasks = plan_jobs(table, job.batch, default_size)
    planned = [t for t in tasks if t.ok]
    digests = file_digests({p for t in planned for p in (t.reference, t.video)}, layout.sources)
    shared = shared_key(job, weights, preset)
    rows: dict[int, dict[str, Any]] = {}
    pending: list[BatchTask] = []
    for task in tasks:
        if not task.ok:
            rows[task.row] = result_row(task, layout)
            continue
        task.key = job_key(task, digests, shared)
        record = _read_json(layout.job_state(task.stem)) if job.runtime.resume else None
        if _finished(record, task.key, layout):
            rows[task.row] = {**record, "row": task.row, "reference": task.reference, "video": task.video,
                              "reused": True}
        else:
            pending.append(task)

    summary = BatchSummary(output=str(root), jobs_file=table.path, results=str(layout.results), model=label,
                           jobs=len(tasks), ran=len(pending), ignored_columns=table.ignored_columns)
    summary.reused = sum(1 for r in rows.values() if r.get("reused"))
    if pending:
        cpus, gpus = stage_resources(job.runtime.cpus_per_worker, job.runtime.gpus_per_worker,
                                     job.runtime.num_workers, job.runtime.device)
        stage = BatchInferStage(job.batch, job.preprocess_config(), str(layout.videos), str(layout.previews),
                                weights=weights, preset=preset, device=job.runtime.device, dtype=job.runtime.dtype,
                                cpus=cpus, gpus=gpus)
        bar = _progress(len(pending), job.runtime.progress)

        def publish(task: BatchTask) -> None:
            row = result_row(task, layout)
            rows[task.row] = row
            atomic_write_json(layout.job_state(task.stem), row)
            if bar is not None:
                bar.update()

        try:
            with make_executor(job.runtime) as executor:
                stats = executor.run(pending, [stage], publish)
                summary.ray_started = executor.connected
        finally:
            if bar is not None:
                bar.close()
        summary.setup_s, summary.run_s = round(stats.setup_s, 3), round(stats.run_s, 3)

    ordered = [rows[t.row] for t in tasks]
    write_results(ordered, layout.results)
    fresh = [r for r in ordered if not r.get("reused")]
    summary.ok = sum(r["status"] == "ok" for r in ordered)
    summary.rejected = sum(r["status"] == "rejected" for r in ordered)
    summary.failed = sum(r["status"] == "failed" for r in ordered)
    summary.frames = sum(int(r["frames"] or 0) for r in fresh if r["status"] == "ok")
    done_now = sum(r["status"] == "ok" for r in fresh)
    if summary.run_s > 0 and done_now:
        summary.jobs_per_hour = round(done_now * 3600.0 / summary.run_s, 2)
    if summary.run_s > 0 and summary.frames:
        summary.seconds_per_frame = round(summary.run_s / summary.frames, 4)
    summary.reasons = dict(Counter(r["reason"] for r in ordered if r["status"] != "ok"))
    summary.outputs = [str(root / r["output"]) for r in ordered if r["status"] == "ok"]
    summary.previews = [str(root / r["preview"]) if r.get("preview") else "" for r in ordered if r["status"] == "ok"]
    summary.rows = [{k: r.get(k) for k in SUMMARY_ROW_KEYS} for r in ordered]
    if summary.failed:
        log.warning("%d job(s) failed for a reason outside their inputs (%s); a rerun tries them again",
                    summary.failed, ", ".join(sorted({r["reason"] for r in ordered if r["status"] == "failed"})))
    summary.total_s = round(time.perf_counter() - started, 3)
    atomic_write_json(root / "summary.json", {k: v for k, v in asdict(summary).items() if k != "rows"})
    return summary
