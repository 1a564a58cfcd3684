"""The Ray Data backend: one ``map_batches`` per stage, each on a fixed actor pool, streamed, with
the finished tasks published on the driver as the dataset is iterated.

Three things plain Ray Data does not do the way the executor contract asks:

* Reservations: every pool is placed at once, so they are fitted to the cluster first
  (``fit_resources``); six pools asking for 4.5 CPUs on a 2-CPU cluster would stall forever.
* Worker death: Ray Data retries a dead actor's batch or drops it. Here each pool's UDF actor
  holds no resources and drives one inner ``StageWorker`` actor that holds the stage's reservation;
  when the inner actor dies, its batch becomes ``worker_error`` rows and a new one is started (at
  most ``MAX_WORKER_REPLACEMENTS`` times, then the run stops).
* Errors that stop the run: Ray Data passes a UDF's exception on as text only, so a failed setup
  (or a stage whose workers keep dying) marks the batch's rows with an internal reason instead,
  and the driver raises the typed error when it reads the first such row, before publishing it.
* Statistics: each row carries a small trace of the batches it went through (stage, batch id,
  size, seconds, counters), from which the driver builds the same ``StageStats`` as the other
  backends.

Tasks travel as JSON text in one column (``task``): their nested stats and annotation maps would
otherwise be forced into Arrow types.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Sequence

import numpy as np
import ray

from anycharv.errors import AnyCharVError, own_error
from anycharv.executor.base import MAX_WORKER_REPLACEMENTS, Publish
from anycharv.executor.config import ExecutorConfig
from anycharv.executor.ray_base import RayExecutor
from anycharv.executor.resources import fit_resources, worker_threads
from anycharv.executor.stage import Stage
from anycharv.executor.stats import RunStats, StageStats, task_units
from anycharv.executor.task import Task
from anycharv.executor.worker import PipelineError, SetupError, StageWorker, error_cause

# Internal reasons that carry a run-stopping error from a UDF to the driver (never published).
_STOPS = {"_setup_failed": SetupError, "_run_stopped": PipelineError}


class _Stop(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class _StageUDF:
    """A Ray Data class UDF for one stage (see the module docstring)."""

    def __init__(self, stage: Stage, threads: int, options: dict[str, Any], task_cls: type):
        self.stage, self.threads, self.options, self.task_cls = stage, threads, options, task_cls
        self.replacements = 0
        self.setup_s = 0.0
        self.stop: _Stop | None = None
        self._start_worker()

    def _start_worker(self) -> None:
        """Start the inner worker and set it up (a failure stops the run from the next call)."""
        self.worker = ray.remote(**self.options)(StageWorker).remote(self.stage, self.threads)
        try:
            self.setup_s = ray.get(self.worker.setup.remote())
        except ray.exceptions.RayError as exc:
            cause = error_cause(exc)
            message = str(cause) if isinstance(cause, SetupError) else (
                f"stage {self.stage.name}: setup failed: {type(cause).__name__}: {cause}")
            self.stop = _Stop("_setup_failed", message)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tasks = [self.task_cls.from_dict(json.loads(text)) for text in batch["task"]]
        traces = [json.loads(text) for text in batch["trace"]]
        todo = [i for i, t in enumerate(tasks) if t.ok]
        if todo and self.stop is None:
            try:
                out, entry = self._process([tasks[i] for i in todo])
            except _Stop as stop:
                self.stop = stop
            else:
                for i, task in zip(todo, out):
                    tasks[i] = task
                    traces[i].append(dict(entry, ok=task.ok))
        if self.stop is not None:
            for i in todo:
                tasks[i].reject(self.stop.reason, str(self.stop))
        return {"task": np.array([json.dumps(t.to_dict()) for t in tasks], dtype=object),
                "trace": np.array([json.dumps(t) for t in traces], dtype=object)}

    def __del__(self) -> None:
        # Ray Data has no end-of-job hook for class UDFs; this runs when the pool's actor is released.
        worker = getattr(self, "worker", None)
        if worker is not None:
            ray.wait([worker.teardown.remote()], timeout=10)
            ray.kill(worker, no_restart=True)

    def _process(self, tasks: list[Task]) -> tuple[list[Task], dict[str, Any]]:
        entry = {"stage": self.stage.name, "batch": uuid.uuid4().hex, "size": len(tasks), "elapsed": 0.0,
                 "counters": {}, "units": sum(task_units(t) for t in tasks), "setup_s": self.setup_s}
        self.setup_s = 0.0  # reported once per worker
        try:
            out, entry["elapsed"], entry["counters"] = ray.get(self.worker.process.remote(tasks))
        except ray.exceptions.RayActorError as exc:
            out = [t.reject("worker_error", f"{self.stage.name}: worker died: {exc}") for t in tasks]
            self.replacements += 1
            if self.replacements > MAX_WORKER_REPLACEMENTS:
                raise _Stop("_run_stopped",
                            f"stage {self.stage.name}: workers died {self.replacements} times; giving up")
            self._start_worker()
        except ray.exceptions.RayTaskError as exc:
            cause = error_cause(exc)
            if isinstance(cause, SetupError):
                raise _Stop("_setup_failed", str(cause)) from None
            out = [t.reject("stage_error", f"{self.stage.name}: {type(cause).__name__}: {cause}") for t in tasks]
        return out, entry


def _quiet_data_context() -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


class RayDataExecutor(RayExecutor):
    name = "ray-data"

    def run(self, tasks: Sequence[Task], stages: Sequence[Stage], publish: Publish,
            config: ExecutorConfig | None = None) -> RunStats:
        config = config or self.config
        self.connect()
        stages = list(stages)
        fitted = fit_resources(stages, config, ray.cluster_resources())
        stats = [StageStats(name=s.name, workers=w, cpus_per_worker=c, gpus_per_worker=g)
                 for s, (w, c, g) in zip(stages, fitted)]
        run = RunStats(stages=stats, tasks=len(tasks))
        if not tasks or not stages:
            return run
        _quiet_data_context()
        task_cls = type(tasks[0])
        rows = [{"task": json.dumps(t.to_dict()), "trace": "[]"} for t in tasks]
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 200))
        for stage, (workers, cpus, gpus) in zip(stages, fitted):
            options = dict(num_cpus=cpus, num_gpus=gpus, max_restarts=0, max_concurrency=1)
            ds = ds.map_batches(_StageUDF, fn_constructor_args=(stage, worker_threads(stage, config), options,
                                                                task_cls),
                                batch_size=config.batch_size or max(1, stage.batch_size), batch_format="numpy",
                                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=0, zero_copy_batch=False)
        start = time.perf_counter()
        seen: dict[str, set[str]] = {s.name: set() for s in stages}
        by_name = {s.name: s for s in stats}
        try:
            for row in ds.iter_rows():
                task = task_cls.from_dict(json.loads(row["task"]))
                if task.reason in _STOPS:
                    raise _STOPS[task.reason](task.detail)
                for entry in json.loads(row["trace"]):
                    _add_trace(by_name[entry["stage"]], entry, seen[entry["stage"]])
                publish(task)
                run.published += 1
        except AnyCharVError:
            raise
        except Exception as exc:
            own = own_error(exc)
            if own is None:
                raise
            raise own from None
        run.run_s = time.perf_counter() - start
        run.setup_s = max((s.setup_s for s in stats), default=0.0)
        return run


def _add_trace(stats: StageStats, entry: dict[str, Any], seen: set[str]) -> None:
    """Count one task's passage through a stage; a batch's time and counters once per batch."""
    stats.tasks_in += 1
    stats.tasks_ok += bool(entry["ok"])
    stats.tasks_rejected += not entry["ok"]
    stats.setup_s = max(stats.setup_s, float(entry.get("setup_s", 0.0)))
    if entry["batch"] not in seen:
        seen.add(entry["batch"])
        stats.batches += 1
        stats.busy_s += float(entry["elapsed"])
        stats.units += int(entry["units"])
        for key, value in entry["counters"].items():
            stats.counters[key] = stats.counters.get(key, 0) + value
