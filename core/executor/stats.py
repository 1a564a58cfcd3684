"""Counts and timings of one executor run (small: they travel as Prefect results)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StageStats:
    name: str
    workers: int = 0
    cpus_per_worker: float = 0.0
    gpus_per_worker: float = 0.0
    setup_s: float = 0.0  # the slowest worker's setup()
    batches: int = 0
    tasks_in: int = 0
    tasks_ok: int = 0
    tasks_rejected: int = 0
    units: int = 0  # work units of the tasks processed (a clip's frames)
    busy_s: float = 0.0  # summed over the stage's workers
    counters: dict[str, int] = field(default_factory=dict)  # what the stage reported (e.g. cached: 3)

    @property
    def units_per_s(self) -> float:
        return self.units / self.busy_s if self.busy_s > 0 else 0.0

    def add_batch(self, tasks_in: int, out: list, elapsed: float, counters: dict[str, int], units: int) -> None:
        self.busy_s += elapsed
        self.units += units
        self.tasks_ok += sum(t.ok for t in out)
        self.tasks_rejected += sum(not t.ok for t in out)
        for key, value in counters.items():
            self.counters[key] = self.counters.get(key, 0) + value

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), units_per_s=self.units_per_s)


@dataclass
class RunStats:
    """What ``Executor.run`` returns."""

    stages: list[StageStats]
    setup_s: float = 0.0  # until every worker had loaded its models (warm start), else the slowest setup
    run_s: float = 0.0  # the work (after setup with warm_start, else including it)
    tasks: int = 0
    published: int = 0


def task_units(task: Any) -> int:
    """Work units of a task: its ``units`` attribute (a clip's frames), else 1."""
    return int(getattr(task, "units", 1))
