"""The unit of work of every parallel job: a small record with an id, a status and a reason.

Tasks carry paths and plain numbers, never frames or tensors (a stage re-reads what it needs from
files), so they are cheap to ship to a worker and to send back, as objects or as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

OK = "ok"
REJECTED = "rejected"
# Rejections caused by the machinery rather than by the input: a rerun retries them.
RETRY_REASONS = frozenset({"stage_error", "plan_error", "worker_error"})

T = TypeVar("T", bound="Task")


@dataclass(kw_only=True)
class Task:
    """Base of the task records. Subclasses add their fields and name their id (``task_id``)."""

    status: str = OK
    reason: str = ""
    detail: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (its share of the batch)

    @property
    def task_id(self) -> str:  # pragma: no cover - subclasses override
        raise NotImplementedError

    @property
    def ok(self) -> bool:
        return self.status == OK

    def reject(self: T, reason: str, detail: str = "") -> T:
        self.status = REJECTED
        self.reason = reason
        self.detail = detail
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        return cls(**data)
