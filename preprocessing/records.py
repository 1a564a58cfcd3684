"""Small records that travel between stages, Ray actors and Prefect tasks: paths and numbers only,
never frames or tensors (those are re-read from the source video or from annotation files)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

OK = "ok"
REJECTED = "rejected"


@dataclass
class ClipTask:
    """One clip of one source video, as it moves through the clip stages.

    Stages fill ``annotations`` (name -> file path under ``work_dir``) and ``stats``; a stage that
    rejects the clip sets ``status=REJECTED`` plus a reason code, and later stages pass it through.
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
    status: str = OK
    reason: str = ""
    detail: str = ""
    track_id: int = -1
    annotations: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    frames_key: str = ""  # keys.frames_key of the clip's frames; empty: no stage result is cached

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def ok(self) -> bool:
        return self.status == OK

    def reject(self, reason: str, detail: str = "") -> "ClipTask":
        self.status = REJECTED
        self.reason = reason
        self.detail = detail
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClipTask":
        return cls(**data)
