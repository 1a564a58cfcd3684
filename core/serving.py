"""The serving folder: the model that inference uses, replaced only by a better one.

Layout under ``ROOT``::

    ROOT/models/<model_id>/     every promoted model, kept (the previous one is a rollback away)
    ROOT/serving                a symlink to models/<model_id>: what ``anycharv infer --weights`` and
                                batch jobs point at
    ROOT/promotions.jsonl       one line per promotion (model id, scores, time)

``promote`` swaps the link with one ``os.replace`` of a fresh link over the old one, so a reader
sees the previous model or the new one, never a missing or half-copied folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from anycharv.atomic import TMP_PREFIX
from anycharv.errors import InputError


@dataclass(frozen=True)
class ServingRoot:
    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> "ServingRoot":
        return cls(Path(root).expanduser().resolve())

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def link(self) -> Path:
        return self.root / "serving"

    @property
    def history(self) -> Path:
        return self.root / "promotions.jsonl"

    def current(self) -> Path | None:
        """The served model folder, or None before the first promotion."""
        if not self.link.is_symlink():
            if self.link.exists():
                raise InputError(str(self.link), "exists but is not the serving link this tool manages",
                                 code="bad_serving_folder")
            return None
        target = self.link.resolve()
        if not target.is_dir():
            raise InputError(str(self.link), f"points at {target}, which is not a folder", code="bad_serving_folder")
        return target

    def promote(self, model_dir: str | os.PathLike, model_id: str, record: dict | None = None) -> Path:
        """Copy ``model_dir`` to ``models/<model_id>`` (via a temporary name) and point the
        serving link at it atomically; returns the new serving target."""
        source = Path(model_dir).resolve()
        if not (source / "model_index.json").is_file():
            raise InputError(str(source), "is not a pipeline folder (no model_index.json)", code="not_a_model")
        self.models.mkdir(parents=True, exist_ok=True)
        target = self.models / model_id
        if target.exists():
            raise InputError(str(target), "a promoted model of this id exists already", code="model_exists")
        staging = self.models / f"{TMP_PREFIX}{model_id}-{uuid.uuid4().hex[:8]}"
        shutil.copytree(source, staging)
        os.replace(staging, target)
        link_tmp = self.root / f"{TMP_PREFIX}serving-{uuid.uuid4().hex[:8]}"
        os.symlink(os.path.relpath(target, self.root), link_tmp)
        os.replace(link_tmp, self.link)
        line = {"model_id": model_id, "path": str(target), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **(record or {})}
        with open(self.history, "a") as fh:
            fh.write(json.dumps(line, sort_keys=True) + "\n")
        return target
