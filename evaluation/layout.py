"""Where an evaluation writes under its output folder ``OUT``::

    OUT/clips.parquet          one row per chosen clip: clip_id, split, bucket, frames, status, reason,
                               detail, reference_frame, and every metric (None where not computed)
    OUT/aggregate.parquet      one row per metric: metric, value (mean over the scored clips; FID / FVD
                               over all of them), clips, samples, higher_is_better
    OUT/summary.json           the run's figures (``EvalSummary``)
    OUT/config.yaml            the config it ran with
    OUT/previews/<clip_id>.png target frames (top) over generated frames, for the first clips
    OUT/features/<clip_id>.npz FID / FVD features of a clip (generated and target), when those are on

Every file is written under a temporary name and renamed (``anycharv.atomic``); a rerun replaces
them and drops the previews and features the previous run left.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from anycharv.atomic import TMP_PREFIX


@dataclass(frozen=True)
class EvalLayout:
    root: Path

    @classmethod
    def at(cls, output: str | os.PathLike) -> "EvalLayout":
        return cls(Path(output).expanduser().resolve())

    @property
    def clips(self) -> Path:
        return self.root / "clips.parquet"

    @property
    def aggregate(self) -> Path:
        return self.root / "aggregate.parquet"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def previews(self) -> Path:
        return self.root / "previews"

    @property
    def features(self) -> Path:
        return self.root / "features"

    def preview(self, clip_id: str) -> Path:
        return self.previews / f"{clip_id}.png"

    def feature_file(self, clip_id: str) -> Path:
        return self.features / f"{clip_id}.npz"

    def prepare(self) -> "EvalLayout":
        """Create the folders; remove what an earlier run left in them (and half-written files)."""
        for folder, pattern in ((self.previews, "*.png"), (self.features, "*.npz")):
            folder.mkdir(parents=True, exist_ok=True)
            for path in folder.glob(pattern):
                path.unlink(missing_ok=True)
        for folder in (self.root, self.previews, self.features):
            for path in folder.glob(f"{TMP_PREFIX}*"):
                path.unlink(missing_ok=True)
        return self
