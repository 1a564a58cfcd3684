"""The preprocessing driver: inputs in, published clips out, with the parallel work on the executor.

1. Inputs are planned (probed and split into clips). An unchanged input whose plan is on disk is
   found without any worker (``source_index.py``); the others go through the plan job (``PlanStage``).
2. Each planned clip is admitted unless it is published under the current stage keys; admitted
   clips carry their stage keys (``keys.py``) and go through the clip stages, each wrapped in a
   ``CachedStage``, so after a settings change only the stages whose key changed run again.
3. Finished clips are published by the driver (``finalize.finalize_clip``); a rerun skips what is
   published (see ``finalize.py`` for the crash-safety argument).

Ray (for the Ray backends) starts only when some work needs it: a rerun with nothing left to do
finishes without a cluster. Clips rejected for a machinery failure (``RETRY_REASONS``) are retried
by the next run; a stage whose ``setup()`` fails stops the run (``PipelineError``) with nothing
recorded for it.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from typing import Any, Sequence

from anycharv.atomic import atomic_write_json
from anycharv.config import config_hash as compute_config_hash
from anycharv.executor import Executor, PipelineError, Stage, StageStats, make_executor
from anycharv.executor.task import REJECTED, RETRY_REASONS
from anycharv.output_paths import check_output_dir
from anycharv.preprocessing.config import PreprocessConfig
from anycharv.preprocessing.finalize import (
    DONE_NAME,
    OutputLayout,
    clean_stale,
    clip_record,
    finalize_clip,
    read_json,
    recover_finished,
    reset_work_dir,
    unlink_quiet,
)
from anycharv.preprocessing.inputs import (
    DigestFn,
    PlanFn,
    PlanStage,
    expand_inputs,
    input_key,
    input_rejection,
    path_key,
)
from anycharv.preprocessing.keys import content_hash, short_hash, stage_key
from anycharv.preprocessing.records import ClipTask, InputTask
from anycharv.preprocessing.runtime import RuntimeConfig
from anycharv.preprocessing.source_index import SourceIndex
from anycharv.preprocessing.stage_cache import CachedStage
from anycharv.preprocessing.summary import RunSummary

__all__ = ["PipelineError", "run_pipeline", "stage_keys"]


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


class _Driver:
    """Driver-side state of one run."""

    def __init__(self, layout: OutputLayout, cfg: Any, cfg_hash: str, runtime: RuntimeConfig, stages: Sequence[Stage],
                 plan_fn: PlanFn, digest_fn: DigestFn, summary: RunSummary, executor: Executor):
        self.layout, self.cfg, self.cfg_hash, self.runtime = layout, cfg, cfg_hash, runtime
        self.plan_fn, self.digest_fn, self.summary, self.executor = plan_fn, digest_fn, summary, executor
        self.stages = list(stages)
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise PipelineError(f"stage names must be unique, got {names}")
        self.settings = [s.cache_settings() for s in self.stages]
        self.index = SourceIndex(layout.source_index)
        self.digests: dict[str, str] = {}
        self.names: dict[str, list[str]] = {}  # input key -> every input path that gave it
        self.canonical: dict[str, str] = {}  # input key -> the path its records name
        self.seen: set[str] = set()
        self.todo: list[ClipTask] = []
        self.reasons: Counter = Counter()
        self.bar = None

    # -- inputs

    def plan(self, sources: Sequence[str]) -> None:
        """Every input's record, from disk where possible, else from the plan job."""
        self.summary.inputs += len(sources)
        remote = []
        for source in sources:
            record = self._plan_locally(source)
            if record is None:
                remote.append(InputTask(source=source))
            else:
                self._on_plan(source, record)
        if remote:
            workers = self.runtime.max_plan_tasks or max(1, int(self.executor.cluster_cpus()))
            config = self.runtime.model_copy(update={"stage_workers": {"plan": workers}, "batch_size": 1,
                                                     "warm_start": False})
            stage = PlanStage(self.cfg, self.cfg_hash, str(self.layout.work), str(self.layout.input_states),
                              self.runtime.resume, self.plan_fn, self.digest_fn)
            run = self.executor.run(remote, [stage], self._on_plan_task, config=config)
            self.summary.run_s += run.run_s

    def _plan_locally(self, source: str) -> dict[str, Any] | None:
        """The input's record when it needs no worker: a missing file, or (resuming) an unchanged
        file whose stored record is final."""
        if not os.path.isfile(source):
            return input_rejection(source, self.cfg_hash, "not_found", f"{source}: no such file")
        digest = self.index.lookup(source) if self.runtime.resume else None
        stored = self.layout.input_state(input_key(digest, self.cfg_hash)) if digest else None
        if stored is None or not stored.exists():
            return None
        previous = read_json(stored)
        return None if previous.get("reason") in RETRY_REASONS else dict(previous, cached=True)

    def _on_plan_task(self, task: InputTask) -> None:
        if task.ok:
            self._on_plan(task.source, task.record)
        else:  # the plan job itself failed on this input (its worker died, or a bug escaped)
            self._on_plan(task.source, input_rejection(task.source, self.cfg_hash, "plan_error", task.detail))

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

    # -- clips

    def _admit_clip(self, task: ClipTask, digest: str) -> None:
        if task.clip_id in self.seen:
            return  # the same content given twice
        self.seen.add(task.clip_id)
        self.summary.clips_planned += 1
        self.summary.clips_short += bool(task.stats.get("short_window"))
        keys = stage_keys(task, self.stages, self.settings)
        task.stage_keys = {s.name: k for s, k in zip(self.stages, keys) if k}
        if self.runtime.resume and self._finished(task.clip_id, short_hash(keys)):
            self.summary.clips_skipped += 1
            return
        task.work_dir = str(self.layout.work / task.clip_id)
        reset_work_dir(task)
        self.digests[task.clip_id] = digest
        self.summary.frames_processed += task.num_frames
        self.todo.append(task)

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

    def process(self) -> None:
        """The clip job: every admitted clip through the (cached) stages."""
        self.summary.stages = [StageStats(name=s.name) for s in self.stages]
        if not self.todo:
            return
        cached = [CachedStage(s, self.layout.stage_cache, eager_setup=self.runtime.warm_start) for s in self.stages]
        self._open_bar(len(self.todo))
        try:
            run = self.executor.run(self.todo, cached, self._finish)
        finally:
            self._close_bar()
        self.summary.stages = run.stages
        self.summary.setup_s = run.setup_s
        self.summary.run_s += run.run_s

    def _finish(self, task: ClipTask) -> None:
        keys = [task.stage_keys.get(s.name) for s in self.stages]
        record = clip_record(task, source_digest=self.digests.pop(task.clip_id), config_hash=self.cfg_hash,
                             timings=task.timings)
        record["pipeline_key"] = short_hash(keys)
        finalize_clip(self.layout, record)
        self.summary.clips_processed += 1
        if task.ok:
            self.summary.clips_ok += 1
        else:
            self.summary.clips_rejected += 1
            self.reasons[task.reason] += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        self.summary.reasons = dict(sorted(self.reasons.items()))
        self.summary.duplicates = self.duplicate_inputs()
        self.summary.inputs_duplicate = len(self.summary.duplicates)

    # -- progress

    def _open_bar(self, total: int) -> None:
        if self.runtime.progress and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="clip", desc="preprocess", dynamic_ncols=True)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _renamed(record: dict[str, Any], source: str) -> dict[str, Any]:
    """An input record (and its clips) naming ``source``, the file's new path."""
    clips = [dict(c, source=source) for c in record["clips"]]
    return dict(record, source=source, clips=clips)


def run_pipeline(sources: Sequence[str], output: str | os.PathLike, cfg: Any, runtime: RuntimeConfig | None = None, *,
                 stages: Sequence[Stage] | None = None, plan_fn: PlanFn | None = None,
                 digest_fn: DigestFn | None = None, cfg_hash: str | None = None) -> RunSummary:
    """Run the clip pipeline over ``sources`` (paths or globs) into ``output`` on the executor that
    ``runtime.executor`` names; returns counts and timings. The manifest is written separately
    (``manifest.write_manifest``), so a caller may run several batches first. ``cfg`` is the stage
    config (what plans and stages see); ``stages``, ``plan_fn`` and ``digest_fn`` default to the
    project's (``build_clip_stages``, ``plan_video``, ``source_digest``).

    The output folder is checked before anything starts. A new output folder is created only once
    the executor is up (a Ray cluster that cannot be reached leaves nothing behind); on an existing
    one, Ray starts only if some work is left."""
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
    summary = RunSummary(output=str(output), config_hash=cfg_hash, executor=runtime.executor)
    with make_executor(runtime) as executor:
        if not OutputLayout.at(output, runtime.work_dir).exists:
            executor.connect()
        layout = OutputLayout.create(output, runtime.work_dir)
        clean_stale(layout)
        summary.recovered = recover_finished(layout)
        driver = _Driver(layout, cfg, cfg_hash, runtime, stages, plan_fn, digest_fn, summary, executor)
        try:
            driver.plan(inputs)
            driver.process()
        finally:
            driver.close()
            summary.ray_started = executor.connected
            summary.init_s = executor.connect_s
    summary.wall_s = time.perf_counter() - wall_start
    return summary
