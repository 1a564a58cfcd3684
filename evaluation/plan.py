"""Which clips an evaluation scores, and the per-clip choices that must not depend on where or
when a clip runs.

The clips are the stage-1 samples of the cache's ``eval.split`` (val; train when the cache has no
val clip, with a warning), ordered by a hash of (``eval.seed``, clip id) and cut to
``eval.num_clips``: a function of the cache's index and the config alone, so two models scored on
the same cache with the same config see the same clips, references and noise.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from anycharv.datasets.sample_reader import shards_dir
from anycharv.datasets.shard_index import INDEX_NAME, read_index
from anycharv.errors import InputError
from anycharv.evaluation.config import EvalConfig
from anycharv.executor.task import Task

log = logging.getLogger("anycharv.evaluation")


def hash_index(modulo: int, *parts) -> int:
    """A number in [0, modulo) from ``parts`` (sha256 of their text): stable across processes,
    machines and Python versions, unlike ``hash``."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") % modulo


def noise_seed(seed: int, clip_id: str) -> int:
    """The seed of a clip's initial noise."""
    return hash_index(2**63, seed, "eval-noise", clip_id)


@dataclass(kw_only=True)
class EvalTask(Task):
    """One clip to reconstruct and score; ``metrics`` is filled by the stage."""

    clip_id: str
    split: str
    bucket: str
    num_frames: int  # the cached clip's
    frames: int  # scored: min(num_frames, eval.num_frames)
    reference_index: int = -1  # which of the clip's cached references (set by the stage)
    reference_frame: int = -1  # that reference's frame in the clip
    preview: bool = False
    preview_path: str = ""
    features_path: str = ""  # FID/FVD features (npz), when those metrics are on
    metrics: dict[str, float | None] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        return self.clip_id

    @property
    def units(self) -> int:
        return self.frames


def read_clips(cache_dir: str | os.PathLike, name: str = "data") -> list:
    """The stage-1 samples of the cache's index; InputError naming ``name`` when the folder is not
    a latent cache or holds none."""
    root = Path(cache_dir).expanduser()
    if not root.is_dir():
        raise InputError(f"{name} {cache_dir}", "no such folder (give a latent cache made by `anycharv cache`)",
                         code="no_cache")
    if not (shards_dir(root) / INDEX_NAME).is_file():
        raise InputError(f"{name} {cache_dir}", f"no shards/{INDEX_NAME} here: not a latent cache (run `anycharv "
                         "cache` first)", code="no_cache")
    try:
        samples = [s for s in read_index(shards_dir(root)) if s.set == "stage1"]
    except InputError as exc:
        raise InputError(f"{name} {cache_dir}", str(exc), code=exc.code) from exc
    if not samples:
        raise InputError(f"{name} {cache_dir}", "the cache's index has no stage-1 sample", code="no_clips")
    return samples


def plan_tasks(samples: list, cfg: EvalConfig) -> tuple[str, list[EvalTask]]:
    """(the split used, one task per chosen clip in scoring order); the first ``num_previews``
    write a preview."""
    split = cfg.split
    chosen = [s for s in samples if s.split == split]
    if not chosen:
        other = "train" if split == "val" else "val"
        chosen = [s for s in samples if s.split == other]
        log.warning("evaluation: the cache has no %s clip; scoring %d %s clips instead (they may have been "
                    "trained on)", split, len(chosen), other)
        split = other
    chosen.sort(key=lambda s: (hash_index(2**63, cfg.seed, "eval-order", s.clip_id), s.clip_id))
    if cfg.num_clips is not None:
        chosen = chosen[: cfg.num_clips]
    tasks = [EvalTask(clip_id=s.clip_id, split=s.split, bucket=s.bucket, num_frames=int(s.num_frames),
                      frames=min(int(s.num_frames), cfg.num_frames)) for s in chosen]
    for task in tasks[: cfg.num_previews]:
        task.preview = True
    return split, tasks
