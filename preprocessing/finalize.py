"""Crash-safe on-disk state of a preprocessing run.

Layout under the output folder ``DIR``::

    DIR/.work/<clip_id>/          stages write annotations here (never read by users)
    DIR/clips/<clip_id>/          finished clips; appears in one ``rename`` with ``_done.json`` inside
    DIR/.state/clips/<id>.json    one record per finished clip (ok or rejected)
    DIR/.state/inputs/<key>.json  one record per planned or rejected input video
    DIR/.state/sources/*.json     content digests of the inputs by path (``source_index.py``)
    DIR/.cache/stages/<stage>/<key>/  each stage's result per clip (``stage_cache.py``)
    DIR/manifest/clips.parquet    built from the records (see ``manifest.py``)

Every file is written through ``anycharv.atomic`` (a hidden temporary name, then ``os.replace``),
and a clip folder is renamed into ``clips/`` only after its completion record is inside it. So a
SIGKILL at any moment leaves either nothing or a complete file under each final name, and a rerun
can finish the job from the records (``recover_finished``).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anycharv.atomic import TMP_PREFIX, atomic_write_json
from anycharv.executor.task import OK
from anycharv.preprocessing.records import ClipTask

DONE_NAME = "_done.json"
TRASH_PREFIX = ".trash-"


@dataclass(frozen=True)
class OutputLayout:
    """Where a run keeps each kind of file."""

    root: Path
    work: Path

    @classmethod
    def at(cls, output: str | os.PathLike, work_dir: str | None = None) -> "OutputLayout":
        """The layout of ``output`` without creating anything."""
        root = Path(output).expanduser().resolve()
        work = Path(work_dir).expanduser().resolve() if work_dir else root / ".work"
        return cls(root=root, work=work)

    @classmethod
    def create(cls, output: str | os.PathLike, work_dir: str | None = None) -> "OutputLayout":
        layout = cls.at(output, work_dir)
        for folder in (layout.clips, layout.clip_states, layout.input_states, layout.source_index,
                       layout.stage_cache, layout.manifest_dir, layout.work):
            folder.mkdir(parents=True, exist_ok=True)
        return layout

    @property
    def exists(self) -> bool:
        """Whether an earlier run left state here (so some work may be found done)."""
        return self.state.is_dir()

    @property
    def clips(self) -> Path:
        return self.root / "clips"

    @property
    def state(self) -> Path:
        return self.root / ".state"

    @property
    def clip_states(self) -> Path:
        return self.state / "clips"

    @property
    def input_states(self) -> Path:
        return self.state / "inputs"

    @property
    def source_index(self) -> Path:
        return self.state / "sources"

    @property
    def stage_cache(self) -> Path:
        return self.root / ".cache" / "stages"

    @property
    def manifest_dir(self) -> Path:
        return self.root / "manifest"

    @property
    def manifest_path(self) -> Path:
        return self.manifest_dir / "clips.parquet"

    def clip_state(self, clip_id: str) -> Path:
        return self.clip_states / f"{clip_id}.json"

    def input_state(self, key: str) -> Path:
        return self.input_states / f"{key}.json"

    def clip_dir(self, clip_id: str) -> Path:
        return self.clips / clip_id


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def unlink_quiet(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def clip_record(task: ClipTask, *, source_digest: str, config_hash: str, timings: dict[str, float]) -> dict[str, Any]:
    """The completion record of one clip: what the manifest row is built from."""
    record = task.to_dict()
    record.update(kind="clip", source_digest=source_digest, config_hash=config_hash, timings=dict(timings))
    return record


def reset_work_dir(task: ClipTask) -> None:
    """Clear what an interrupted earlier attempt may have left, so a clip always starts clean."""
    work = Path(task.work_dir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)


def finalize_clip(layout: OutputLayout, record: dict[str, Any]) -> dict[str, Any]:
    """Publish one finished clip: completion record into its work folder, one rename of the folder
    into ``clips/``, then the state record. Rejected clips publish only the state record."""
    clip_id = record["clip_id"]
    work = Path(record["work_dir"])
    if record["status"] == OK:
        record = dict(record, work_dir=str(layout.clip_dir(clip_id)))
        atomic_write_json(work / DONE_NAME, record)
        final = layout.clip_dir(clip_id)
        if final.exists():  # a copy from an earlier attempt (only possible with resume off)
            trash = layout.work / f"{TRASH_PREFIX}{clip_id}-{uuid.uuid4().hex[:8]}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(work, final)
    else:
        record = dict(record, work_dir="")
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    atomic_write_json(layout.clip_state(clip_id), record)
    return record


def recover_finished(layout: OutputLayout) -> int:
    """Write the missing state records of clip folders that were renamed into place just before a
    crash. Returns how many were recovered."""
    recovered = 0
    for done in layout.clips.glob(f"*/{DONE_NAME}"):
        clip_id = done.parent.name
        if not layout.clip_state(clip_id).exists():
            atomic_write_json(layout.clip_state(clip_id), read_json(done))
            recovered += 1
    return recovered


def clean_stale(layout: OutputLayout) -> int:
    """Remove temporary files and trash folders a killed run left behind; they are never under a
    final name, so removing them only reclaims space. Returns how many were removed."""
    removed = 0
    stage_folders = [p for p in layout.stage_cache.iterdir() if p.is_dir()] if layout.stage_cache.is_dir() else []
    for folder in (layout.clip_states, layout.input_states, layout.source_index, layout.manifest_dir, layout.root,
                   *stage_folders):
        for tmp in folder.glob(f"{TMP_PREFIX}*"):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                unlink_quiet(tmp)
            removed += 1
    for trash in layout.work.glob(f"{TRASH_PREFIX}*"):
        shutil.rmtree(trash, ignore_errors=True)
        removed += 1
    return removed


def load_records(folder: Path) -> list[dict[str, Any]]:
    """All JSON records in ``folder`` (sorted by name, so the order is stable)."""
    return [read_json(p) for p in sorted(folder.glob("*.json"))]
