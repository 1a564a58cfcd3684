"""The stage pattern: a small class that declares its resources, loads its model once per worker in
``setup()``, and processes a batch of clip tasks. The runner turns stages into Ray actors; tests call
them directly as plain Python."""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import Any

from anycharv.preprocessing.records import ClipTask


@dataclass(frozen=True)
class StageResources:
    """What one worker of the stage needs (fractional GPUs are allowed)."""

    cpus: float = 1.0
    gpus: float = 0.0


class Stage(ABC):
    """Base class of clip stages.

    Subclasses set ``name``, ``resources`` and ``batch_size``, load heavy models in ``setup()`` (never
    in ``__init__``: the object is pickled to Ray workers) and implement ``process_one`` or
    ``process_batch``. Rejected tasks are passed through untouched; an exception on one clip is
    recorded on that clip (reason ``stage_error``) and the batch goes on.
    """

    name: str = "stage"
    resources: StageResources = StageResources()
    batch_size: int = 1
    # Names of the stages whose outputs this one reads: its cache key includes theirs. None: every
    # earlier stage of the pipeline.
    depends_on: tuple[str, ...] | None = None

    def __init__(self) -> None:
        self._ready = False

    def setup(self) -> None:
        """Load models; called once per worker before the first batch."""

    def cache_settings(self) -> Any:
        """The JSON-able settings that decide this stage's output (see ``keys.stage_key``); None
        (the default) keeps the stage out of the stage cache, so it always runs."""
        return None

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    def process_one(self, task: ClipTask) -> ClipTask:  # pragma: no cover - subclasses override
        raise NotImplementedError(f"{type(self).__name__} implements neither process_one nor process_batch")

    def process_batch(self, tasks: list[ClipTask]) -> list[ClipTask]:
        self.ensure_setup()
        out = []
        for task in tasks:
            if not task.ok:
                out.append(task)
                continue
            try:
                out.append(self.process_one(task))
            except Exception as exc:  # recorded per clip; the batch goes on
                out.append(task.reject("stage_error", f"{self.name}: {type(exc).__name__}: {exc}"))
        return out

    def __call__(self, tasks: list[ClipTask]) -> list[ClipTask]:
        return self.process_batch(tasks)
