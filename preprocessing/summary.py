"""Counts and timings of one preprocessing run (small: it travels as a Prefect result)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from anycharv.executor.stats import StageStats


@dataclass
class RunSummary:
    output: str
    config_hash: str
    executor: str = ""
    inputs: int = 0
    inputs_rejected: int = 0
    inputs_cached: int = 0
    inputs_duplicate: int = 0  # byte-identical to another input: skipped
    duplicates: dict[str, str] = field(default_factory=dict)  # skipped input -> the input it duplicates
    clips_planned: int = 0
    clips_short: int = 0  # shorter than the split's clip length (a short video or shot)
    clips_processed: int = 0
    clips_skipped: int = 0
    clips_ok: int = 0
    clips_rejected: int = 0
    frames_processed: int = 0
    recovered: int = 0
    ray_started: bool = False  # False: everything was found done on disk
    init_s: float = 0.0  # connecting to / starting Ray
    setup_s: float = 0.0  # until every stage worker had loaded its models (warm start)
    run_s: float = 0.0  # the work itself (after setup when warm_start, else including it)
    wall_s: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    stages: list[StageStats] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.frames_processed / self.run_s if self.run_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["frames_per_s"] = self.frames_per_s
        data["stages"] = [s.to_dict() for s in self.stages]
        return data
