"""Small records that travel between stages, workers and Prefect tasks: paths and numbers only,
never frames or tensors (those are re-read from the source video or from annotation files)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from anycharv.executor.task import Task


@dataclass(kw_only=True)
class ClipTask(Task):
    """One clip of one source video, as it moves through the clip stages.

    Stages fill ``annotations`` (name -> file path under ``work_dir``) and ``stats``; a stage that
    rejects the clip sets ``status=REJECTED`` plus a reason code, and later stages pass it through.
    ``stage_keys`` (stage name -> key, set by the driver) name each stage's result in the stage cache.
    """

    clip_id: str
    source: str
    start_frame: int
    end_frame: int  # exclusive
    fps: float
    width: int  # processing size (after the resize policy)
    height: int
    src_width: int
    src_height: int
    work_dir: str
    track_id: int = -1
    annotations: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    frames_key: str = ""  # keys.frames_key of the clip's frames; empty: no stage result is cached
    stage_keys: dict[str, str] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        return self.clip_id

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def units(self) -> int:
        return self.num_frames


@dataclass(kw_only=True)
class InputTask(Task):
    """One input video to probe and split; ``record`` is its input record once planned."""

    source: str
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        return self.source
