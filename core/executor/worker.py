"""The body of one stage worker, the same for every backend: the stage object, set up once, then
fed batches. Failures are turned into what the executor contract promises: an exception that
escapes a batch rejects that batch's tasks (``stage_error``); a failing ``setup()`` is a
``SetupError`` that stops the run (every task would fail the same way)."""

from __future__ import annotations

import time
from typing import Any

from anycharv.errors import AnyCharVError
from anycharv.executor.resources import limit_threads
from anycharv.executor.stage import Stage
from anycharv.executor.stats import task_units
from anycharv.executor.task import Task


class PipelineError(AnyCharVError, RuntimeError):
    """The run cannot go on (a stage's setup failed, or its workers keep dying)."""


class SetupError(PipelineError):
    """A stage's ``setup()`` failed."""


def error_cause(exc: BaseException) -> BaseException:
    """The user-level exception inside a Ray error (a task's own exception), else ``exc``."""
    return getattr(exc, "cause", None) or exc


def setup_error(stage: Stage, exc: BaseException) -> SetupError:
    if isinstance(exc, SetupError):
        return exc
    return SetupError(f"stage {stage.name}: setup failed: {type(exc).__name__}: {exc}")


class StageWorker:
    """One worker of a stage (in process, or as a Ray actor)."""

    def __init__(self, stage: Stage, threads: int):
        limit_threads(threads)
        self.stage = stage
        self.threads = threads

    def setup(self) -> float:
        """Load the stage's models; returns the seconds it took."""
        start = time.perf_counter()
        try:
            self.stage.ensure_setup()
        except Exception as exc:
            raise setup_error(self.stage, exc) from exc
        limit_threads(self.threads)  # again, for what setup() imported
        return time.perf_counter() - start

    def process(self, tasks: list[Task]) -> tuple[list[Task], float, dict[str, int]]:
        """(tasks out, seconds, the stage's counters for this batch)."""
        start = time.perf_counter()
        try:
            out = self.stage.process_batch(tasks)
        except SetupError:
            raise
        except Exception as exc:  # a bug that escaped the whole batch: its tasks are rejected, the run goes on
            out = [t.reject("stage_error", f"{self.stage.name}: {type(exc).__name__}: {exc}") for t in tasks]
        elapsed = time.perf_counter() - start
        total = sum(task_units(t) for t in out) or 1
        for task in out:
            task.timings[self.stage.name] = elapsed * task_units(task) / total
        return out, elapsed, self.stage.take_counters()

    def teardown(self) -> None:
        self.stage.teardown()

    def ping(self) -> Any:
        return True
