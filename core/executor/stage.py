"""The stage pattern: a small class that declares its resources, loads its model once per worker in
``setup()``, and processes a batch of tasks. The executor turns stages into workers (in process, Ray
actors, or Ray Data actor pools); tests call them directly as plain Python."""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import Any, ClassVar

from anycharv.executor.task import Task


@dataclass(frozen=True)
class StageResources:
    """What one worker of the stage needs (fractional GPUs are allowed)."""

    cpus: float = 1.0
    gpus: float = 0.0


class Stage(ABC):
    """Base class of stages.

    Subclasses set the class attributes ``name``, ``resources`` and ``batch_size``, load heavy models
    in ``setup()`` (never in ``__init__``: the object is pickled to workers), free them in
    ``teardown()``, and implement ``process_one`` or ``process_batch``. Rejected tasks are passed
    through untouched; an exception on one task is recorded on that task (reason ``stage_error``)
    and the batch goes on.

    ``requires`` and ``produces`` name the annotations a stage reads and writes, so a pipeline
    builder can check the order (``check_order``); ``depends_on`` names the stages whose outputs it
    reads (None: every earlier stage), which is what its cache key is made of.
    """

    name: ClassVar[str] = "stage"
    resources: ClassVar[StageResources] = StageResources()
    batch_size: ClassVar[int] = 1
    requires: ClassVar[tuple[str, ...]] = ()
    produces: ClassVar[tuple[str, ...]] = ()
    depends_on: ClassVar[tuple[str, ...] | None] = None

    def __init__(self) -> None:
        self._ready = False
        self.counters: dict[str, int] = {}  # per-batch counts a stage reports (e.g. cache hits)

    def setup(self) -> None:
        """Load models; called once per worker before the first batch that needs them."""

    def teardown(self) -> None:
        """Free what ``setup()`` loaded; called once per worker when the job ends."""

    def cache_settings(self) -> Any:
        """The JSON-able settings that decide this stage's output; None (the default) keeps the
        stage out of result caches, so it always runs."""
        return None

    def take_counters(self) -> dict[str, int]:
        """The counters since the last call (the executor adds them to the stage's stats)."""
        counters, self.counters = getattr(self, "counters", {}), {}
        return counters

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    def process_one(self, task: Task) -> Task:  # pragma: no cover - subclasses override
        raise NotImplementedError(f"{type(self).__name__} implements neither process_one nor process_batch")

    def process_batch(self, tasks: list[Task]) -> list[Task]:
        self.ensure_setup()
        out = []
        for task in tasks:
            if not task.ok:
                out.append(task)
                continue
            try:
                out.append(self.process_one(task))
            except Exception as exc:  # recorded per task; the batch goes on
                out.append(task.reject("stage_error", f"{self.name}: {type(exc).__name__}: {exc}"))
        return out

    def __call__(self, tasks: list[Task]) -> list[Task]:
        return self.process_batch(tasks)


def check_order(stages: list[Stage], available: tuple[str, ...] = ()) -> None:
    """Raise ValueError when a stage requires an annotation no earlier stage produces, or two
    stages share a name."""
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique, got {names}")
    have = set(available)
    for stage in stages:
        missing = [r for r in stage.requires if r not in have]
        if missing:
            raise ValueError(f"stage {stage.name} requires {missing}, which no earlier stage produces "
                             f"(order: {names})")
        have.update(stage.produces)
