"""The in-process backend: every stage in this process, one batch after another. For debugging (a
breakpoint in a stage just works) and for unit tests. A worker that dies here is the driver itself,
so only the Ray backends can promise ``worker_error``."""

from __future__ import annotations

import time
from typing import Sequence

from anycharv.executor.base import Executor, Publish
from anycharv.executor.config import ExecutorConfig
from anycharv.executor.resources import worker_threads
from anycharv.executor.stage import Stage
from anycharv.executor.stats import RunStats, StageStats, task_units
from anycharv.executor.task import Task
from anycharv.executor.worker import StageWorker


class LocalExecutor(Executor):
    name = "local"

    def run(self, tasks: Sequence[Task], stages: Sequence[Stage], publish: Publish,
            config: ExecutorConfig | None = None) -> RunStats:
        config = config or self.config
        stats = [StageStats(name=s.name, workers=1, cpus_per_worker=float(s.resources.cpus)) for s in stages]
        run = RunStats(stages=stats, tasks=len(tasks))
        workers = [StageWorker(s, worker_threads(s, config)) for s in stages]
        start = time.perf_counter()
        try:
            if config.warm_start:
                for worker, stage_stats in zip(workers, stats):
                    stage_stats.setup_s = worker.setup()
                run.setup_s = time.perf_counter() - start
                start = time.perf_counter()
            current = list(tasks)
            for index, (stage, worker, stage_stats) in enumerate(zip(stages, workers, stats)):
                size = config.batch_size or max(1, stage.batch_size)
                passed: list[Task] = []
                if current and not config.warm_start:
                    stage_stats.setup_s = worker.setup()
                for first in range(0, len(current), size):
                    batch = current[first:first + size]
                    out, elapsed, counters = worker.process(batch)
                    stage_stats.batches += 1
                    stage_stats.tasks_in += len(batch)
                    stage_stats.add_batch(len(batch), out, elapsed, counters, sum(task_units(t) for t in batch))
                    for task in out:
                        if task.ok and index + 1 < len(stages):
                            passed.append(task)
                        else:
                            publish(task)
                            run.published += 1
                current = passed
        finally:
            for worker in workers:
                worker.teardown()
        run.run_s = time.perf_counter() - start
        return run
