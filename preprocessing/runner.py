"""The parallel preprocessing runner: clip stages as pools of Ray actors, with items streamed.

* One Ray task per input video probes and splits it (``plan_fn``), a few at a time.
* Each clip stage is a pool of actors created with the stage's resources (fractional GPUs allowed);
  an actor calls ``stage.setup()`` once, then takes batches of clips.
* A small scheduler on the driver waits on whatever finishes first (``ray.wait``) and moves clips on
  at once, so stage N+1 works on the first clips while stage N is still busy with later ones. A
  stage sends a partial batch only when nothing upstream could still fill it.
* Finished clips are published by the driver (``finalize.finalize_clip``); a rerun skips what is
  published (see ``finalize.py`` for the crash-safety argument).
* Each stage's result on each clip is kept under its stage key (``keys.py``, ``stage_cache.py``):
  after a settings change only the stages whose key changed run again, and a stage whose results
  all come from the cache never starts its actors.
* Ray itself starts only when some work needs it: a rerun with nothing left to do finds every input
  and clip on disk (``source_index.py``) and finishes without a cluster.

Failures: an exception on one clip is recorded on that clip (the Stage base class does this); an
exception that escapes a whole batch rejects that batch's clips (``stage_error``); a worker process
that dies rejects its batch (``worker_error``) and is replaced. Clips rejected for one of these
reasons are retried by the next run. A stage whose ``setup()`` fails stops the run
(``PipelineError``): nothing is recorded, since every clip would fail the same way.

Ray is used here (and in launchers) only; stages are plain Python.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import sys
import time
from collections import Counter, deque
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import ray

from anycharv.atomic import atomic_write_json
from anycharv.config import config_hash as compute_config_hash
from anycharv.errors import AnyCharVError, InputError
from anycharv.output_paths import check_output_dir
from anycharv.preprocessing.config import PreprocessConfig
from anycharv.preprocessing.finalize import (
    DONE_NAME, OutputLayout, unlink_quiet, clean_stale, clip_record, finalize_clip, read_json,
    recover_finished, reset_work_dir,
)
from anycharv.preprocessing.keys import content_hash, short_hash, stage_key
from anycharv.preprocessing.records import REJECTED, ClipTask
from anycharv.preprocessing.runtime import RuntimeConfig
from anycharv.preprocessing.source_index import SourceIndex, file_stamp
from anycharv.preprocessing.stage import Stage
from anycharv.preprocessing.stage_cache import StageCache

log = logging.getLogger(__name__)

PlanFn = Callable[[str, Any, str], "list[ClipTask]"]
DigestFn = Callable[[str], str]

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
# Rejections caused by a failure of the machinery rather than by the input: the next run retries them.
RETRY_REASONS = frozenset({"stage_error", "plan_error", "worker_error"})
MAX_WORKER_REPLACEMENTS = 3


class PipelineError(AnyCharVError, RuntimeError):
    """The run cannot go on (a stage's setup failed, or its workers keep dying)."""


# ----------------------------------------------------------------------------- inputs and keys


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Absolute paths of the inputs: globs are expanded, folders give the videos inside them. A
    pattern that matches nothing is kept as is, so that it gets its ``not_found`` row."""
    out: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                out.append(os.path.abspath(pattern))
            for match in matches:
                out.extend(_expand_path(match))
        else:
            out.extend(_expand_path(pattern))
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def require_inputs(patterns: Sequence[str]) -> list[str]:
    """``expand_inputs``, but an error (before any work starts) when no pattern gives an existing
    file, naming each pattern and why it gave nothing."""
    sources = expand_inputs(patterns)
    if any(os.path.isfile(s) for s in sources):
        return sources
    why = []
    for pattern in patterns:
        path = os.path.expanduser(str(pattern))
        if glob.has_magic(path):
            why.append(f"{pattern!r} matches no file")
        elif os.path.isdir(path):
            why.append(f"folder {pattern!r} holds no video ({', '.join(sorted(VIDEO_EXTENSIONS))})")
        else:
            why.append(f"{pattern!r} does not exist")
    raise InputError("--input", "no input video: " + "; ".join(why or ["no pattern given"]), code="no_input")


def _expand_path(path: str) -> list[str]:
    if os.path.isdir(path):
        return sorted(
            os.path.abspath(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files
            if Path(f).suffix.lower() in VIDEO_EXTENSIONS
        )
    return [os.path.abspath(path)]


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def input_key(source_digest: str, cfg_hash: str) -> str:
    """Content-derived key of an input video under one config."""
    return "in-" + _short_hash(f"{source_digest}:{cfg_hash}")


def path_key(source: str, cfg_hash: str) -> str:
    """Key of an input that could not be read at all (so it has no digest): derived from its path."""
    return "in-" + _short_hash(f"path:{source}:{cfg_hash}")


# ----------------------------------------------------------------------------- remote pieces


def input_rejection(source: str, cfg_hash: str, reason: str, detail: str) -> dict[str, Any]:
    """The record of an input that gives no clips and could not be hashed (keyed by its path)."""
    return {"kind": "input", "source": source, "config_hash": cfg_hash, "source_digest": "",
            "key": path_key(source, cfg_hash), "status": REJECTED, "reason": reason, "detail": detail, "clips": []}


def plan_input(source: str, cfg: Any, cfg_hash: str, work_root: str, input_states: str, resume: bool,
               plan_fn: PlanFn, digest_fn: DigestFn) -> dict[str, Any]:
    """Probe and split one input (runs as a Ray task). Returns its input record; a finished input's
    stored record when resuming; a rejection record (with the reason code) for a bad input. The
    record's ``stamp`` (size, mtime) is what its digest was computed at (for ``SourceIndex``)."""
    if not os.path.isfile(source):
        return input_rejection(source, cfg_hash, "not_found", f"{source}: no such file")
    try:
        stamp = file_stamp(source)
        digest = digest_fn(source)
    except InputError as exc:
        return input_rejection(source, cfg_hash, exc.code, str(exc))
    except OSError as exc:
        return input_rejection(source, cfg_hash, "unreadable", f"{source}: {exc}")
    record = dict(input_rejection(source, cfg_hash, "", ""), source_digest=digest, key=input_key(digest, cfg_hash),
                  stamp=list(stamp))
    stored = Path(input_states) / f"{record['key']}.json"
    if resume and stored.exists():
        previous = read_json(stored)
        if previous.get("reason") not in RETRY_REASONS:
            return dict(previous, cached=True, stamp=list(stamp))
    try:
        clips = plan_fn(source, cfg, work_root)
    except InputError as exc:
        return dict(record, reason=exc.code, detail=str(exc))
    except Exception as exc:  # an unexpected failure on one input is recorded; the batch goes on
        return dict(record, reason="plan_error", detail=f"{source}: {type(exc).__name__}: {exc}")
    if not clips:
        return dict(record, reason="no_clips", detail=f"{source}: no clip passed the split rules")
    return dict(record, status="planned", clips=[c.to_dict() for c in clips])


def _limit_threads(threads: int) -> None:
    """Keep an actor to its CPU share: environment for libraries not imported yet, direct calls for
    those already imported (torch is not imported here: light stages should not pay for it)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(threads)


class StageWorker:
    """Body of one stage actor: the stage object, set up once, then fed batches."""

    def __init__(self, stage: Stage, threads: int):
        _limit_threads(threads)
        self.stage = stage
        self.threads = threads

    def setup(self) -> float:
        start = time.perf_counter()
        self.stage.ensure_setup()
        _limit_threads(self.threads)  # again, for what setup() imported
        return time.perf_counter() - start

    def process(self, tasks: list[ClipTask]) -> tuple[list[ClipTask], float]:
        start = time.perf_counter()
        out = self.stage.process_batch(tasks)
        return out, time.perf_counter() - start


# ----------------------------------------------------------------------------- ray session


@contextmanager
def ray_session(runtime: RuntimeConfig) -> Iterator[bool]:
    """Use the Ray connection the caller made, else join ``runtime.ray_address`` / ``RAY_ADDRESS``,
    else start a local cluster. Only a connection made here is closed here (closing a connection to
    an existing cluster leaves that cluster running). Yields whether this call connected."""
    if ray.is_initialized():
        yield False
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = runtime.ray_address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=runtime.num_cpus, num_gpus=runtime.num_gpus, include_dashboard=False, log_to_driver=True)
    try:
        yield True
    finally:
        ray.shutdown()


# ----------------------------------------------------------------------------- summary


@dataclass
class StageStats:
    name: str
    workers: int = 0
    cpus_per_worker: float = 0.0
    gpus_per_worker: float = 0.0
    setup_s: float = 0.0
    batches: int = 0
    clips_in: int = 0
    clips_ok: int = 0
    clips_rejected: int = 0
    clips_cached: int = 0  # results taken from the stage cache instead of running the stage
    frames: int = 0
    busy_s: float = 0.0  # summed over the stage's workers

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.busy_s if self.busy_s > 0 else 0.0


@dataclass
class RunSummary:
    """Counts and timings of one run (small: it travels as a Prefect result)."""

    output: str
    config_hash: str
    inputs: int = 0
    inputs_rejected: int = 0
    inputs_cached: int = 0
    inputs_duplicate: int = 0  # byte-identical to another input: skipped
    duplicates: dict[str, str] = field(default_factory=dict)  # skipped input -> the input it duplicates
    clips_planned: int = 0
    clips_short: int = 0  # shorter than the split's clip length (a short video or shot)
    clips_processed: int = 0
    clips_skipped: int = 0
    clips_ok: int = 0
    clips_rejected: int = 0
    frames_processed: int = 0
    recovered: int = 0
    ray_started: bool = False  # False: everything was found done on disk
    init_s: float = 0.0  # connecting to / starting Ray
    setup_s: float = 0.0  # until every stage worker had loaded its models
    run_s: float = 0.0  # the work itself (after setup when warm_start, else including it)
    wall_s: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    stages: list[StageStats] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.frames_processed / self.run_s if self.run_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["frames_per_s"] = self.frames_per_s
        for stats, out in zip(self.stages, data["stages"]):
            out["frames_per_s"] = stats.frames_per_s
        return data


# ----------------------------------------------------------------------------- scheduling


def fit_resources(stages: Sequence[Stage], runtime: RuntimeConfig, cluster: dict[str, float]) -> list[tuple[int, float, float]]:
    """(workers, cpus, gpus) per stage. When all pools together ask for more than the cluster has,
    each reservation is scaled down by the same factor so every actor can start (the stages of a
    pipeline are rarely all busy at once); GPU requests are dropped on a cluster without GPUs."""
    workers = [runtime.stage_workers.get(s.name, runtime.num_workers) for s in stages]
    cpus = [float(s.resources.cpus) for s in stages]
    gpus = [float(s.resources.gpus) for s in stages]
    total_cpu, total_gpu = float(cluster.get("CPU", 1.0)), float(cluster.get("GPU", 0.0))
    if total_gpu <= 0 and any(gpus):
        log.warning("no GPU in the Ray cluster: GPU stages run on CPU")
        gpus = [0.0] * len(stages)
    cpu_scale = min(1.0, total_cpu / max(1e-9, sum(w * c for w, c in zip(workers, cpus))))
    gpu_demand = sum(w * g for w, g in zip(workers, gpus))
    gpu_scale = min(1.0, total_gpu / gpu_demand) if gpu_demand > 0 else 1.0
    if cpu_scale < 1.0:
        log.info("stage pools ask for more CPUs than the cluster's %s: reservations scaled by %.2f", total_cpu, cpu_scale)

    def frac(x: float) -> float:
        x = int(x * 1e4) / 1e4  # Ray keeps 4 decimals
        return float(int(x)) if x >= 1 else x

    return [(w, frac(c * cpu_scale), frac(g * gpu_scale)) for w, c, g in zip(workers, cpus, gpus)]


@dataclass
class _Pool:
    index: int
    stage: Stage
    stats: StageStats
    batch_size: int
    options: dict[str, Any]
    threads: int
    actors: list[Any] = field(default_factory=list)
    idle: list[Any] = field(default_factory=list)
    queue: deque = field(default_factory=deque)
    busy: int = 0
    replacements: int = 0


def stage_keys(task: ClipTask, stages: Sequence[Stage], settings: Sequence[Any]) -> list[str | None]:
    """The cache key of each stage's result on ``task`` (None: not cached, nor anything after it
    that reads its output)."""
    keys: dict[str, str | None] = {}
    out: list[str | None] = []
    for index, (stage, setting) in enumerate(zip(stages, settings)):
        deps = stage.depends_on if stage.depends_on is not None else [s.name for s in stages[:index]]
        upstream = [keys[d] for d in deps if d in keys]
        key = None
        if task.frames_key and setting is not None and None not in upstream:
            key = stage_key(stage.name, setting, [task.frames_key, *upstream])
        keys[stage.name] = key
        out.append(key)
    return out


class _Scheduler:
    """Driver-side state of one run. ``connect`` starts or joins Ray; it is called only when some
    work needs it."""

    def __init__(self, layout: OutputLayout, cfg: Any, cfg_hash: str, runtime: RuntimeConfig, stages: Sequence[Stage],
                 plan_fn: PlanFn, digest_fn: DigestFn, summary: RunSummary, connect: Callable[[], None]):
        self.layout, self.cfg, self.cfg_hash, self.runtime = layout, cfg, cfg_hash, runtime
        self.plan_fn, self.digest_fn, self.summary, self.connect = plan_fn, digest_fn, summary, connect
        self.stages = list(stages)
        names = Counter(s.name for s in self.stages)
        if any(n > 1 for n in names.values()):
            raise PipelineError(f"stage names must be unique, got {[s.name for s in self.stages]}")
        self.settings = [s.cache_settings() for s in self.stages]
        self.stats = [StageStats(name=s.name) for s in self.stages]
        self.cache = StageCache(layout.stage_cache)
        self.index = SourceIndex(layout.source_index)
        self.inflight: dict[Any, tuple] = {}
        self.pending_inputs: deque[str] = deque()
        self.remote_inputs: deque[str] = deque()
        self.plans_inflight = 0
        self.digests: dict[str, str] = {}
        self.timings: dict[str, dict[str, float]] = {}
        self.keys: dict[str, list[str | None]] = {}
        self.names: dict[str, list[str]] = {}  # input key -> every input path that gave it
        self.canonical: dict[str, str] = {}  # input key -> the path its records name
        self.seen: set[str] = set()
        self.reasons: Counter = Counter()
        self.pools: list[_Pool | None] = [None] * len(self.stages)
        self.fitted: list[tuple[int, float, float]] | None = None
        self.setup_start = 0.0
        self.bar = None
        self.remote_plan = None
        self.plan_limit = 1
        self.cfg_ref = None

    # -- Ray, on first need

    def _ray(self) -> None:
        if self.cfg_ref is not None:
            return
        self.connect()
        self.cfg_ref = ray.put(self.cfg)

    def _pool(self, index: int) -> _Pool:
        """The actor pool of stage ``index``, created when the first clip is admitted that may need
        the stage (a stage whose results all come from the cache, or a rerun with nothing left to do,
        loads no model)."""
        pool = self.pools[index]
        if pool is not None:
            return pool
        self._ray()
        if self.fitted is None:
            self.setup_start = time.perf_counter()
            self.fitted = fit_resources(self.stages, self.runtime, ray.cluster_resources())
        stage, (workers, cpus, gpus) = self.stages[index], self.fitted[index]
        stats = self.stats[index]
        stats.workers, stats.cpus_per_worker, stats.gpus_per_worker = workers, cpus, gpus
        threads = self.runtime.threads_per_worker or max(1, int(round(stage.resources.cpus)))
        options = dict(num_cpus=cpus, num_gpus=gpus, max_restarts=0, max_concurrency=1)
        pool = _Pool(index=index, stage=stage, batch_size=self.runtime.batch_size or max(1, stage.batch_size),
                     options=options, threads=threads, stats=stats)
        self.pools[index] = pool
        for _ in range(workers):
            self._add_actor(pool)
        return pool

    def _add_actor(self, pool: _Pool) -> None:
        actor = ray.remote(**pool.options)(StageWorker).remote(pool.stage, pool.threads)
        pool.actors.append(actor)
        self.inflight[actor.setup.remote()] = ("setup", pool, actor)

    def stop_pools(self) -> None:
        for pool in self.pools:
            for actor in pool.actors if pool else []:
                ray.kill(actor, no_restart=True)
            if pool:
                pool.actors.clear()

    # -- inputs

    def add_inputs(self, sources: Sequence[str]) -> None:
        self.pending_inputs.extend(sources)
        self.summary.inputs += len(sources)

    def _plan_locally(self, source: str) -> dict[str, Any] | None:
        """The input's record when it needs no Ray task: a missing file, or (resuming) an unchanged
        file whose stored record is final."""
        if not os.path.isfile(source):
            return input_rejection(source, self.cfg_hash, "not_found", f"{source}: no such file")
        digest = self.index.lookup(source) if self.runtime.resume else None
        stored = self.layout.input_state(input_key(digest, self.cfg_hash)) if digest else None
        if stored is None or not stored.exists():
            return None
        previous = read_json(stored)
        return None if previous.get("reason") in RETRY_REASONS else dict(previous, cached=True)

    def _submit_plans(self) -> None:
        while self.pending_inputs:
            source = self.pending_inputs.popleft()
            record = self._plan_locally(source)
            if record is None:
                self.remote_inputs.append(source)
            else:
                self._on_plan(source, record)
        if self.remote_inputs and self.remote_plan is None:
            # Probing is light and IO-bound: no CPU reservation (so it never waits behind the stage
            # actors), with at most one probe per cluster CPU at a time.
            self._ray()
            self.plan_limit = self.runtime.max_plan_tasks or max(1, int(ray.cluster_resources().get("CPU", 1)))
            self.remote_plan = ray.remote(num_cpus=0, max_retries=1)(plan_input)
        while self.remote_inputs and self.plans_inflight < self.plan_limit:
            source = self.remote_inputs.popleft()
            ref = self.remote_plan.remote(source, self.cfg_ref, self.cfg_hash, str(self.layout.work),
                                          str(self.layout.input_states), self.runtime.resume, self.plan_fn,
                                          self.digest_fn)
            self.inflight[ref] = ("plan", source)
            self.plans_inflight += 1

    def _on_plan(self, source: str, record: dict[str, Any]) -> None:
        cached = record.pop("cached", False)
        stamp = record.pop("stamp", None)
        key = record["key"]
        if record["source_digest"] and stamp:
            self.index.store(source, record["source_digest"], *stamp)
        if cached and record["source"] != source and not os.path.isfile(record["source"]):
            record = _renamed(record, source)  # the file was moved since: its records follow it
            cached = False
        self.names.setdefault(key, []).append(source)
        if key in self.canonical:
            return  # the same bytes under another name: planned once (see duplicate_inputs)
        self.canonical[key] = record["source"]
        if cached:
            self.summary.inputs_cached += 1
        else:
            atomic_write_json(self.layout.input_state(key), record)
        if record["status"] == REJECTED:
            self.summary.inputs_rejected += 1
            self.reasons[record["reason"]] += 1
            return
        stale = self.layout.input_state(path_key(source, self.cfg_hash))
        if stale.name != f"{key}.json":
            unlink_quiet(stale)  # an earlier not_found/unreadable record of this path is now obsolete
        for data in record["clips"]:
            self._admit_clip(ClipTask.from_dict(data), record["source_digest"])

    def duplicate_inputs(self) -> dict[str, str]:
        """Inputs skipped because their bytes equal another input's: {skipped path: kept path}."""
        return {name: self.canonical[key] for key, names in sorted(self.names.items()) for name in names
                if name != self.canonical[key]}

    def _admit_clip(self, task: ClipTask, digest: str) -> None:
        if task.clip_id in self.seen:
            return  # the same content given twice
        self.seen.add(task.clip_id)
        self.summary.clips_planned += 1
        self.summary.clips_short += bool(task.stats.get("short_window"))
        keys = stage_keys(task, self.stages, self.settings)
        if self.runtime.resume and self._finished(task.clip_id, short_hash(keys)):
            self.summary.clips_skipped += 1
            self._bar_add(total=1, done=1)
            return
        for index, (stage, key) in enumerate(zip(self.stages, keys)):
            if key is None or not self.cache.has(stage.name, key):
                self._pool(index)  # this clip may need the stage: its workers start loading now
        task.work_dir = str(self.layout.work / task.clip_id)
        reset_work_dir(task)
        self.keys[task.clip_id] = keys
        self.digests[task.clip_id] = digest
        self.summary.frames_processed += task.num_frames
        self.timings[task.clip_id] = {}
        self._bar_add(total=1)
        self._route(task, 0)

    def _finished(self, clip_id: str, pipeline_key: str) -> bool:
        """Published for good under the current stage keys: a state record not asking for a retry,
        and for an ok clip its folder. (A clip published under other keys, e.g. after a preview
        setting changed, runs again; its unchanged stages come from the cache.)"""
        state = self.layout.clip_state(clip_id)
        if not state.exists():
            return False
        record = read_json(state)
        if record.get("reason") in RETRY_REASONS or record.get("pipeline_key") != pipeline_key:
            return False
        return record["status"] == REJECTED or (self.layout.clip_dir(clip_id) / DONE_NAME).is_file()

    # -- clips

    def _route(self, task: ClipTask, next_stage: int) -> None:
        """Send the clip to the next stage that must run, taking cached stage results on the way."""
        keys = self.keys[task.clip_id]
        while task.ok and next_stage < len(self.stages):
            key = keys[next_stage]
            if key is None or not self.cache.apply(self.stages[next_stage].name, key, task):
                self._pool(next_stage).queue.append(task)
                return
            self.stats[next_stage].clips_cached += 1
            next_stage += 1
        self._finish(task)

    def _finish(self, task: ClipTask) -> None:
        keys = self.keys.pop(task.clip_id)
        record = clip_record(task, source_digest=self.digests.pop(task.clip_id), config_hash=self.cfg_hash,
                             timings=self.timings.pop(task.clip_id))
        record.update(pipeline_key=short_hash(keys), stage_keys={s.name: k for s, k in zip(self.stages, keys) if k})
        finalize_clip(self.layout, record)
        self.summary.clips_processed += 1
        if task.ok:
            self.summary.clips_ok += 1
        else:
            self.summary.clips_rejected += 1
            self.reasons[task.reason] += 1
        self._bar_add(done=1)

    def _upstream_busy(self, index: int) -> bool:
        if self.pending_inputs or self.remote_inputs or self.plans_inflight:
            return True
        return any(p.queue or p.busy for p in self.pools[:index] if p)

    def _dispatch(self) -> None:
        if self.runtime.warm_start and any(e[0] == "setup" for e in self.inflight.values()):
            return
        for pool in reversed([p for p in self.pools if p]):  # drain downstream first: finished clips leave sooner
            while pool.idle and pool.queue and (len(pool.queue) >= pool.batch_size or not self._upstream_busy(pool.index)):
                batch = [pool.queue.popleft() for _ in range(min(pool.batch_size, len(pool.queue)))]
                actor = pool.idle.pop()
                self.inflight[actor.process.remote(batch)] = ("batch", pool, actor, batch)
                pool.busy += 1
                pool.stats.batches += 1
                pool.stats.clips_in += len(batch)

    def _on_batch(self, pool: _Pool, actor: Any, batch: list[ClipTask], result: tuple | Exception) -> None:
        pool.busy -= 1
        before = {t.clip_id: ClipTask.from_dict(t.to_dict()) for t in batch}
        if isinstance(result, ray.exceptions.RayActorError):
            log.warning("a %s worker died (%s); its batch of %d clips is rejected and the worker replaced",
                        pool.stage.name, result, len(batch))
            out = [t.reject("worker_error", f"{pool.stage.name}: worker died: {result}") for t in batch]
            pool.actors.remove(actor)
            pool.replacements += 1
            if pool.replacements > MAX_WORKER_REPLACEMENTS:
                raise PipelineError(f"stage {pool.stage.name}: workers died {pool.replacements} times; giving up")
            self._add_actor(pool)
            elapsed = 0.0
        elif isinstance(result, Exception):
            cause = error_cause(result)
            out = [t.reject("stage_error", f"{pool.stage.name}: {type(cause).__name__}: {cause}") for t in batch]
            pool.idle.append(actor)
            elapsed = 0.0
        else:
            out, elapsed = result
            pool.idle.append(actor)
        frames = sum(t.num_frames for t in batch) or 1
        pool.stats.busy_s += elapsed
        pool.stats.frames += sum(t.num_frames for t in batch)
        for task in out:
            if task.clip_id in self.timings:
                self.timings[task.clip_id][pool.stage.name] = elapsed * task.num_frames / frames
            key = self.keys[task.clip_id][pool.index]
            if key is not None and task.reason not in RETRY_REASONS:
                self.cache.store(pool.stage.name, key, before[task.clip_id], task)
            if task.ok:
                pool.stats.clips_ok += 1
            else:
                pool.stats.clips_rejected += 1
            self._route(task, pool.index + 1)

    # -- main loop

    def run(self) -> None:
        self.work_start = time.perf_counter()
        if self.runtime.warm_start:
            for index in range(len(self.stages)):
                self._pool(index)
            while self.inflight:
                self._step()
            self.work_start = time.perf_counter()
        while True:
            self._submit_plans()
            self._dispatch()
            if not self.inflight:
                break
            self._step()
        self.summary.reasons = dict(sorted(self.reasons.items()))
        self.summary.stages = self.stats
        self.summary.duplicates = self.duplicate_inputs()
        self.summary.inputs_duplicate = len(self.summary.duplicates)

    def _step(self) -> None:
        """Wait for the next finished piece of work and act on it."""
        ready, _ = ray.wait(list(self.inflight), num_returns=1)
        entry = self.inflight.pop(ready[0])
        try:
            result: Any = ray.get(ready[0])
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
            result = exc
        kind = entry[0]
        if kind == "setup":
            self._on_setup(entry[1], entry[2], result)
        elif kind == "plan":
            self.plans_inflight -= 1
            if isinstance(result, Exception):
                cause = error_cause(result)
                result = input_rejection(entry[1], self.cfg_hash, "plan_error",
                                         f"{entry[1]}: {type(cause).__name__}: {cause}")
            self._on_plan(entry[1], result)
        else:
            self._on_batch(entry[1], entry[2], entry[3], result)

    def _on_setup(self, pool: _Pool, actor: Any, result: Any) -> None:
        if isinstance(result, Exception):
            cause = error_cause(result)
            raise PipelineError(f"stage {pool.stage.name}: setup failed: {type(cause).__name__}: {cause}") from cause
        pool.stats.setup_s = max(pool.stats.setup_s, float(result))
        self.summary.setup_s = max(self.summary.setup_s, time.perf_counter() - self.setup_start)
        pool.idle.append(actor)

    # -- progress

    def open_bar(self) -> None:
        if self.runtime.progress and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit="clip", desc="preprocess", dynamic_ncols=True)

    def _bar_add(self, total: int = 0, done: int = 0) -> None:
        if self.bar is not None:
            if total:
                self.bar.total += total
                self.bar.refresh()
            if done:
                self.bar.update(done)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()


def error_cause(exc: BaseException) -> BaseException:
    """The user-level exception inside a Ray error (a task's own exception), else ``exc``."""
    return getattr(exc, "cause", None) or exc


def _renamed(record: dict[str, Any], source: str) -> dict[str, Any]:
    """An input record (and its clips) naming ``source``, the file's new path."""
    clips = [dict(c, source=source) for c in record["clips"]]
    return dict(record, source=source, clips=clips)


# ----------------------------------------------------------------------------- entry points


def run_pipeline(sources: Sequence[str], output: str | os.PathLike, cfg: Any, runtime: RuntimeConfig | None = None, *,
                 stages: Sequence[Stage] | None = None, plan_fn: PlanFn | None = None,
                 digest_fn: DigestFn | None = None, cfg_hash: str | None = None) -> RunSummary:
    """Run the clip pipeline over ``sources`` (paths or globs) into ``output``; returns counts and
    timings. The manifest is written separately (``manifest.write_manifest``), so a caller may run
    several batches first. ``cfg`` is the stage config (what plans and stages see); ``stages``,
    ``plan_fn`` and ``digest_fn`` default to the project's (``build_clip_stages``, ``plan_video``,
    ``source_digest``).

    The output folder is checked before anything starts. A new output folder is created only once
    Ray is up (a cluster that cannot be reached leaves nothing behind); on an existing one, Ray
    starts only if some work is left."""
    runtime = runtime or RuntimeConfig()
    wall_start = time.perf_counter()
    if stages is None or plan_fn is None or digest_fn is None:
        from anycharv.preprocessing import plan as plan_mod
        from anycharv.preprocessing.stages import build_clip_stages

        stages = build_clip_stages(cfg) if stages is None else stages
        plan_fn = plan_fn or plan_mod.plan_video
        digest_fn = digest_fn or plan_mod.source_digest
    if not cfg_hash:
        cfg_hash = content_hash(cfg) if isinstance(cfg, PreprocessConfig) else compute_config_hash(cfg)
    output = check_output_dir(output)
    inputs = expand_inputs(sources)
    summary = RunSummary(output=str(output), config_hash=cfg_hash)
    with ExitStack() as ray_scope:
        def connect() -> None:
            start = time.perf_counter()
            ray_scope.enter_context(ray_session(runtime))
            summary.ray_started = True
            summary.init_s += time.perf_counter() - start

        layout = OutputLayout.at(output, runtime.work_dir)
        if not layout.exists:
            connect()
        layout = OutputLayout.create(output, runtime.work_dir)
        clean_stale(layout)
        summary.recovered = recover_finished(layout)
        scheduler = _Scheduler(layout, cfg, cfg_hash, runtime, stages, plan_fn, digest_fn, summary, connect)
        scheduler.add_inputs(inputs)
        scheduler.open_bar()
        try:
            scheduler.run()
        finally:
            scheduler.close_bar()
            if summary.ray_started:
                scheduler.stop_pools()
        summary.run_s = time.perf_counter() - scheduler.work_start
    summary.wall_s = time.perf_counter() - wall_start
    return summary
