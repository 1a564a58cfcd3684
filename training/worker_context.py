"""What a training loop asks of whoever runs it: its rank, its device, and how a checkpoint is
handed over. ``LocalContext`` is this process alone (tests, ``runtime.launcher=local``): it moves
the checkpoint into ``RUN/checkpoints`` itself. The Ray Train one (``ray_context.RayContext``)
reports it to Ray Train, which copies it there and keeps the newest ``checkpoint.keep``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from anycharv.devices import pick_device
from anycharv.training.checkpoint import prune
from anycharv.training.run_layout import RunLayout, checkpoint_name


class LocalContext:
    rank, world_size = 0, 1

    def __init__(self, layout: RunLayout, keep: int, device: str | None = None):
        self.layout, self.keep = layout, keep
        self.device = pick_device(device)

    def report(self, metrics: dict, checkpoint_dir: Path | None, step: int) -> None:
        if checkpoint_dir is None:
            return
        final = self.layout.checkpoint(step)
        if final.exists():
            shutil.rmtree(final)
        os.replace(checkpoint_dir, final)  # one rename: the folder is there complete or not at all
        prune(self.layout.complete_checkpoints(), self.keep)

    def resume_candidates(self) -> list[Path]:
        return []

    def barrier(self) -> None:
        pass

    def all_mean(self, value: torch.Tensor) -> torch.Tensor:
        return value


def scratch_dir(layout: RunLayout, step: int, rank: int) -> Path:
    """Where a checkpoint is assembled before it is handed over (on the run's filesystem, so the
    local hand-over is a rename)."""
    path = layout.checkpoints / f".tmp-{checkpoint_name(step)}-rank{rank}-{os.getpid()}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def sweep_scratch(layout: RunLayout) -> None:
    """Remove the half-assembled checkpoints of a killed run."""
    if layout.checkpoints.is_dir():
        for path in layout.checkpoints.glob(".tmp-*"):
            shutil.rmtree(path, ignore_errors=True)
