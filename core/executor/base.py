"""The executor interface: every parallel job is a list of tasks through a list of stages.

``run(tasks, stages, publish)`` sends each task through the stages in order (a rejected task skips
the rest) and calls ``publish(task)`` on the driver for each finished task, as soon as it is
finished. The promises are the same for every backend:

* an exception on one task rejects that task (``stage_error``, the Stage base class);
* an exception that escapes a batch rejects the batch's tasks (``stage_error``);
* a worker process that dies rejects its batch (``worker_error``) and is replaced, at most
  ``MAX_WORKER_REPLACEMENTS`` times per stage, then the run stops (``PipelineError``);
* a failing ``setup()`` stops the run (``SetupError``) before anything is published for it.

An executor is a context manager: a backend that needs Ray connects on first use (or when
``connect()`` is called) and closes only a connection it made.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from contextlib import ExitStack
from typing import Callable, Sequence

from anycharv.executor.config import ExecutorConfig
from anycharv.executor.stage import Stage
from anycharv.executor.stats import RunStats
from anycharv.executor.task import Task

MAX_WORKER_REPLACEMENTS = 3
Publish = Callable[[Task], None]


class Executor(ABC):
    """Runs stages over tasks; see the module docstring for the contract."""

    name = "executor"

    def __init__(self, config: ExecutorConfig | None = None):
        self.config = config or ExecutorConfig()
        self._scope = ExitStack()
        self.connected = False
        self.connect_s = 0.0

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        """Start or join what the backend runs on (nothing for the local one)."""

    def cluster_cpus(self) -> float:
        """CPUs the backend runs on (this machine's; a Ray cluster's for the Ray backends)."""
        return float(os.cpu_count() or 1)

    def close(self) -> None:
        self._scope.close()
        self.connected = False

    @abstractmethod
    def run(self, tasks: Sequence[Task], stages: Sequence[Stage], publish: Publish,
            config: ExecutorConfig | None = None) -> RunStats:
        """Send ``tasks`` through ``stages``; ``publish`` each finished task on the driver.
        ``config`` overrides the executor's own worker and batch settings for this run."""


def make_executor(config: ExecutorConfig) -> Executor:
    """The backend ``config.executor`` names."""
    if config.executor == "local":
        from anycharv.executor.local import LocalExecutor

        return LocalExecutor(config)
    if config.executor == "ray-actors":
        from anycharv.executor.ray_actors import RayActorsExecutor

        return RayActorsExecutor(config)
    if config.executor == "ray-data":
        from anycharv.executor.ray_data import RayDataExecutor

        return RayDataExecutor(config)
    raise ValueError(f"runtime.executor {config.executor!r}: expected local, ray-actors or ray-data")
