"""Where a training run keeps its files under its folder ``RUN``::

    RUN/run.json                          what the run computes (stage, config hash, data): a rerun of
                                          another run in the same folder is refused
    RUN/config.yaml                       the last launch's full config
    RUN/metrics.jsonl                     one JSON object per optimizer step (rank 0)
    RUN/validation.jsonl                  one JSON object per validation
    RUN/validation/step-NNNNNNNN.png      preview strips of the validation clips
    RUN/tensorboard/                      TensorBoard event files
    RUN/checkpoints/checkpoint_NNNNNNNN/  one folder per checkpoint (the last ``checkpoint.keep``):
        model/<network>/                  diffusers folders (config.json + safetensors) of the three networks
        ema/<network>/                    the EMA weights, when EMA is on
        trainer/optimizer.safetensors     optimizer tensors; their layout is in state.json
        trainer/rng.safetensors           torch RNG states
        trainer/state.json                step, data position, LR scheduler, numpy RNG (written last:
                                          a checkpoint without it is incomplete and ignored)
    RUN/summary.json                      the last launch's figures

A checkpoint folder is complete once ``trainer/state.json`` exists; the runner writes it under a
temporary name and renames the folder, Ray Train copies it into place the same way.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from anycharv.errors import InputError

CHECKPOINT_PREFIX = "checkpoint_"
STATE = "state.json"
_CHECKPOINT = re.compile(r"^checkpoint_(\d{8})$")
NETWORK_NAMES = ("reference_unet", "denoising_unet", "pose_guider")


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{int(step):08d}"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @classmethod
    def at(cls, run_dir: str | os.PathLike) -> "RunLayout":
        return cls(Path(run_dir).expanduser().resolve())

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def validation_log(self) -> Path:
        return self.root / "validation.jsonl"

    @property
    def validation_dir(self) -> Path:
        return self.root / "validation"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / checkpoint_name(step)

    def complete_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, folder) of the complete checkpoints, oldest first."""
        found = []
        if self.checkpoints.is_dir():
            for path in self.checkpoints.iterdir():
                match = _CHECKPOINT.match(path.name)
                if match and is_complete(path):
                    found.append((int(match.group(1)), path))
        return sorted(found)

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        found = self.complete_checkpoints()
        return found[-1] if found else None


def is_complete(folder: Path) -> bool:
    """state.json is there and every file it lists has its size (a copy cut short is not complete)."""
    try:
        state = json.loads((folder / "trainer" / STATE).read_text())
        return all((folder / rel).is_file() and (folder / rel).stat().st_size == size
                   for rel, size in state["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def checkpoint_state(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / "trainer" / STATE).read_text())


def _has_networks(folder: Path) -> bool:
    return all((folder / name / "config.json").is_file() for name in NETWORK_NAMES)


def resolve_model_dir(path: str | os.PathLike, *, ema: bool = False) -> Path:
    """The folder of network weights that ``path`` stands for: an exported (or any component) folder
    as it is, a checkpoint folder's ``model/`` (``ema/`` with ``ema``), or a run folder's latest
    complete checkpoint. InputError naming ``path`` when it is none of these."""
    root = Path(path).expanduser().resolve()
    sub = "ema" if ema else "model"
    if not ema and _has_networks(root):
        return root
    if _has_networks(root / sub):
        return root / sub
    if (root / "checkpoints").is_dir():
        latest = RunLayout(root).latest_checkpoint()
        if latest is None:
            raise InputError(str(path), "a run folder without a complete checkpoint (train it first)",
                             code="no_checkpoint")
        if _has_networks(latest[1] / sub):
            return latest[1] / sub
        raise InputError(str(path), f"its latest checkpoint {latest[1].name} has no {sub}/ networks"
                         + (" (the run was trained without EMA)" if ema else ""), code="no_checkpoint")
    if not root.exists():
        raise InputError(str(path), "no such folder", code="no_model")
    raise InputError(str(path), f"not a model folder ({', '.join(NETWORK_NAMES)}/ with config.json), a checkpoint "
                     "or a run folder", code="no_model")
