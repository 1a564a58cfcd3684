"""Per-stage results kept across runs, so that a changed setting reruns only the stages it affects.

An entry is what one stage did to one clip, under the stage key of ``keys.stage_key``: the files it
wrote (hard links to the clip's own files, so an entry costs no space while the clip exists) and
the fields it changed (annotations, stats, track id, a rejection). A stage whose key is in the cache
is not run again: the driver links the files into the clip's work folder and applies the fields.

Layout: ``DIR/.cache/stages/<stage>/<key>/`` holding ``entry.json`` and the files. An entry appears
in one rename of a complete folder, so a crash leaves a whole entry or none (and a temporary folder
that ``finalize.clean_stale`` removes). Failures of the machinery (``RETRY_REASONS``) are never kept.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from anycharv.atomic import TMP_PREFIX, atomic_write_json
from anycharv.executor.stage import Stage
from anycharv.executor.task import RETRY_REASONS
from anycharv.executor.worker import setup_error
from anycharv.preprocessing.records import ClipTask

ENTRY_NAME = "entry.json"


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Hard link (no copy of the bytes), or a copy where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stage_delta(before: ClipTask, after: ClipTask) -> dict[str, Any]:
    """What a stage changed on a clip."""
    return {
        "status": after.status, "reason": after.reason, "detail": after.detail, "track_id": after.track_id,
        "annotations": {k: v for k, v in after.annotations.items() if before.annotations.get(k) != v},
        "stats": {k: v for k, v in after.stats.items() if k not in before.stats or before.stats[k] != v},
    }


class StageCache:
    """Stage results under ``root`` (``OutputLayout.stage_cache``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def entry_dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        return (self.entry_dir(stage, key) / ENTRY_NAME).is_file()

    def apply(self, stage: str, key: str, task: ClipTask) -> bool:
        """Give ``task`` the cached result of ``stage``; False when there is none."""
        entry = self.entry_dir(stage, key)
        try:
            delta = json.loads((entry / ENTRY_NAME).read_text())
        except FileNotFoundError:
            return False
        os.makedirs(task.work_dir, exist_ok=True)
        for name in delta["annotations"].values():
            target = Path(task.work_dir) / name
            if target.exists():
                target.unlink()
            link_or_copy(entry / name, target)
        task.annotations.update(delta["annotations"])
        task.stats.update(delta["stats"])
        task.track_id = delta["track_id"]
        if delta["status"] != task.status:
            task.reject(delta["reason"], delta["detail"])
        return True

    def store(self, stage: str, key: str, before: ClipTask, after: ClipTask) -> None:
        """Keep what ``stage`` did to the clip (``before`` -> ``after``), unless already kept."""
        final = self.entry_dir(stage, key)
        if (final / ENTRY_NAME).is_file():
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{TMP_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            delta = stage_delta(before, after)
            for name in delta["annotations"].values():
                link_or_copy(Path(after.work_dir) / name, tmp / name)
            atomic_write_json(tmp / ENTRY_NAME, delta)
            if final.exists():  # an incomplete folder cannot exist under a final name; a racing writer's can
                shutil.rmtree(tmp)
                return
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def entries(self) -> list[tuple[str, str]]:
        """Every (stage, key) kept."""
        if not self.root.is_dir():
            return []
        return sorted((p.parent.parent.name, p.parent.name) for p in self.root.glob(f"*/*/{ENTRY_NAME}"))

    def remove(self, stage: str, key: str) -> None:
        shutil.rmtree(self.entry_dir(stage, key), ignore_errors=True)


class CachedStage(Stage):
    """``inner`` with its results kept in, and served from, the stage cache at ``root``. Clips carry
    their keys (``ClipTask.stage_keys``); a clip without a key for this stage always runs. The
    wrapped stage is set up on the first miss (at worker start with ``eager_setup``, for timings
    without model loading); the number of hits is the counter ``cached``."""

    def __init__(self, inner: Stage, root: str | os.PathLike, eager_setup: bool = False):
        super().__init__()
        self.inner, self.root, self.eager_setup = inner, str(root), eager_setup
        self.name, self.resources, self.batch_size = inner.name, inner.resources, inner.batch_size
        self.requires, self.produces, self.depends_on = inner.requires, inner.produces, inner.depends_on

    def setup(self) -> None:
        if self.eager_setup:
            self.inner.ensure_setup()

    def teardown(self) -> None:
        self.inner.teardown()

    def process_batch(self, tasks: list[ClipTask]) -> list[ClipTask]:
        cache = StageCache(self.root)
        ready = [t for t in tasks if t.ok]  # before apply(): a cached rejection is a hit too
        misses = [t for t in ready if not (t.stage_keys.get(self.name) and
                                           cache.apply(self.name, t.stage_keys[self.name], t))]
        hits = len(ready) - len(misses)
        if hits:
            self.counters["cached"] = self.counters.get("cached", 0) + hits
        if not misses:
            return tasks
        try:
            self.inner.ensure_setup()
        except Exception as exc:
            raise setup_error(self.inner, exc) from exc
        before = {t.clip_id: ClipTask.from_dict(t.to_dict()) for t in misses}
        try:
            done = {t.clip_id: t for t in self.inner.process_batch(misses)}
        except Exception as exc:  # a bug that escaped the batch: only the clips that ran are rejected
            done = {t.clip_id: t.reject("stage_error", f"{self.name}: {type(exc).__name__}: {exc}") for t in misses}
        for clip_id, task in done.items():
            key = task.stage_keys.get(self.name)
            if key and task.reason not in RETRY_REASONS:
                cache.store(self.name, key, before[clip_id], task)
        return [done.get(t.clip_id, t) for t in tasks]
