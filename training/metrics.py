"""Rank 0's logs: ``metrics.jsonl`` (one object per optimizer step), ``validation.jsonl`` and
TensorBoard event files. On resume, lines for steps after the checkpoint (written by the run that
was killed before its next checkpoint) are dropped, so the file reads as one uninterrupted run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def truncate_after(path: Path, step: int) -> None:
    """Keep the lines of ``path`` with ``step`` <= ``step`` (and no torn last line)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if int(record.get("step", 0)) <= step:
            kept.append(line)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    out = []
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


class MetricsLog:
    """Appends records and mirrors their numbers to TensorBoard (when it is installed)."""

    def __init__(self, metrics: Path, validation: Path, tensorboard: Path, resume_step: int):
        truncate_after(metrics, resume_step)
        truncate_after(validation, resume_step)
        self.metrics_path, self.validation_path = metrics, validation
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(tensorboard), purge_step=resume_step + 1)
        except ImportError:  # tensorboard is a declared dependency; a stripped install still trains
            pass

    def _append(self, path: Path, record: dict) -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()

    def step(self, record: dict) -> None:
        self._append(self.metrics_path, record)
        if self.writer is not None:
            for key in ("loss", "lr", "samples_per_s", "grad_norm"):
                if record.get(key) is not None:
                    self.writer.add_scalar(f"train/{key}", record[key], record["step"])

    def validation(self, record: dict, preview: np.ndarray | None) -> None:
        self._append(self.validation_path, record)
        if self.writer is not None:
            for key, value in record.items():
                if key.startswith("psnr") and value is not None:
                    self.writer.add_scalar(f"val/{key}", value, record["step"])
            if preview is not None:
                self.writer.add_image("val/preview", preview, record["step"], dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
