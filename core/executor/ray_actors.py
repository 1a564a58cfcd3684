"""The streaming actor-pool backend: each stage is a pool of Ray actors created with the stage's
resources (fractional GPUs allowed); an actor calls ``setup()`` once, then takes batches.

A small scheduler on the driver waits on whatever finishes first (``ray.wait``) and moves tasks on
at once, so stage N+1 works on the first tasks while stage N is still busy with later ones. A stage
sends a partial batch only when nothing upstream could still fill it; downstream pools are served
first, so finished tasks leave sooner.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import ray

from anycharv.executor.base import MAX_WORKER_REPLACEMENTS, Publish
from anycharv.executor.config import ExecutorConfig
from anycharv.executor.ray_base import RayExecutor
from anycharv.executor.resources import fit_resources, worker_threads
from anycharv.executor.stage import Stage
from anycharv.executor.stats import RunStats, StageStats, task_units
from anycharv.executor.task import Task
from anycharv.executor.worker import PipelineError, SetupError, StageWorker, error_cause, setup_error

log = logging.getLogger(__name__)
TEARDOWN_TIMEOUT_S = 30.0


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


@dataclass
class _InFlight:
    """One piece of work the driver waits for."""

    kind: str  # "setup" or "batch"
    pool: _Pool
    actor: Any
    batch: list[Task] = field(default_factory=list)


class RayActorsExecutor(RayExecutor):
    name = "ray-actors"

    def run(self, tasks: Sequence[Task], stages: Sequence[Stage], publish: Publish,
            config: ExecutorConfig | None = None) -> RunStats:
        config = config or self.config
        self.connect()
        run = _Run(config, stages, publish)
        graceful = True
        try:
            return run.run(tasks)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the workers may be gone with the cluster
            graceful = False
            raise
        finally:
            run.stop(graceful)


class _Run:
    def __init__(self, config, stages: Sequence[Stage], publish: Publish):
        self.config, self.publish = config, publish
        self.setup_start = time.perf_counter()
        self.stages = list(stages)
        self.inflight: dict[Any, _InFlight] = {}
        fitted = fit_resources(self.stages, config, ray.cluster_resources())
        self.pools = []
        for index, (stage, (workers, cpus, gpus)) in enumerate(zip(self.stages, fitted)):
            stats = StageStats(name=stage.name, workers=workers, cpus_per_worker=cpus, gpus_per_worker=gpus)
            options = dict(num_cpus=cpus, num_gpus=gpus, max_restarts=0, max_concurrency=1)
            self.pools.append(_Pool(index=index, stage=stage, stats=stats, options=options,
                                    batch_size=config.batch_size or max(1, stage.batch_size),
                                    threads=worker_threads(stage, config)))
        self.stats = RunStats(stages=[p.stats for p in self.pools])

    def run(self, tasks: Sequence[Task]) -> RunStats:
        start = time.perf_counter()
        self.stats.tasks = len(tasks)
        if not tasks or not self.pools:
            return self.stats
        self.setup_start = start
        for pool in self.pools:
            for _ in range(pool.stats.workers):
                self._add_actor(pool)
        if self.config.warm_start:
            while self.inflight:
                self._step()
            start = time.perf_counter()
        self.pools[0].queue.extend(tasks)
        while True:
            self._dispatch()
            if not self.inflight:
                break
            self._step()
        self.stats.run_s = time.perf_counter() - start
        return self.stats

    def stop(self, graceful: bool = True) -> None:
        """Tear every worker down (bounded wait: a hung teardown must not hang the run), then kill it;
        on an interrupt, kill at once."""
        actors = [a for pool in self.pools for a in pool.actors]
        if actors and graceful:
            ray.wait([a.teardown.remote() for a in actors], num_returns=len(actors), timeout=TEARDOWN_TIMEOUT_S)
        for actor in actors:
            ray.kill(actor, no_restart=True)
        for pool in self.pools:
            pool.actors.clear()

    def _add_actor(self, pool: _Pool) -> None:
        actor = ray.remote(**pool.options)(StageWorker).remote(pool.stage, pool.threads)
        pool.actors.append(actor)
        self.inflight[actor.setup.remote()] = _InFlight("setup", pool, actor)

    def _upstream_busy(self, index: int) -> bool:
        return any(p.queue or p.busy for p in self.pools[:index])

    def _dispatch(self) -> None:
        if self.config.warm_start and any(e.kind == "setup" for e in self.inflight.values()):
            return
        for pool in reversed(self.pools):
            while pool.idle and pool.queue and (
                    len(pool.queue) >= pool.batch_size or not self._upstream_busy(pool.index)):
                batch = [pool.queue.popleft() for _ in range(min(pool.batch_size, len(pool.queue)))]
                actor = pool.idle.pop()
                self.inflight[actor.process.remote(batch)] = _InFlight("batch", pool, actor, batch)
                pool.busy += 1
                pool.stats.batches += 1
                pool.stats.tasks_in += len(batch)

    def _step(self) -> None:
        ready, _ = ray.wait(list(self.inflight), num_returns=1)
        entry = self.inflight.pop(ready[0])
        try:
            result: Any = ray.get(ready[0])
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
            result = exc
        if entry.kind == "setup":
            self._on_setup(entry, result)
        else:
            self._on_batch(entry, result)

    def _on_setup(self, entry: _InFlight, result: Any) -> None:
        if isinstance(result, Exception):
            raise setup_error(entry.pool.stage, error_cause(result)) from error_cause(result)
        entry.pool.stats.setup_s = max(entry.pool.stats.setup_s, float(result))
        self.stats.setup_s = max(self.stats.setup_s, time.perf_counter() - self.setup_start)
        entry.pool.idle.append(entry.actor)

    def _on_batch(self, entry: _InFlight, result: Any) -> None:
        pool, batch = entry.pool, entry.batch
        pool.busy -= 1
        counters: dict[str, int] = {}
        elapsed = 0.0
        if isinstance(result, ray.exceptions.RayActorError):
            log.warning("a %s worker died (%s); its batch of %d tasks is rejected and the worker replaced",
                        pool.stage.name, result, len(batch))
            out = [t.reject("worker_error", f"{pool.stage.name}: worker died: {result}") for t in batch]
            pool.actors.remove(entry.actor)
            pool.replacements += 1
            if pool.replacements > MAX_WORKER_REPLACEMENTS:
                raise PipelineError(f"stage {pool.stage.name}: workers died {pool.replacements} times; giving up")
            self._add_actor(pool)
        elif isinstance(result, Exception):
            cause = error_cause(result)
            if isinstance(cause, SetupError):  # raised by a stage that sets up lazily
                raise cause
            # The worker's own wrapper catches stage errors: this is the batch failing in transit.
            out = [t.reject("stage_error", f"{pool.stage.name}: {type(cause).__name__}: {cause}") for t in batch]
            pool.idle.append(entry.actor)
        else:
            out, elapsed, counters = result
            pool.idle.append(entry.actor)
        pool.stats.add_batch(len(batch), out, elapsed, counters, sum(task_units(t) for t in batch))
        for task in out:
            if task.ok and pool.index + 1 < len(self.pools):
                self.pools[pool.index + 1].queue.append(task)
            else:
                self.publish(task)
                self.stats.published += 1
