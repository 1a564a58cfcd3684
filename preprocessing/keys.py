"""What enters the content-derived keys of preprocessing, and what does not.

A key must change when, and only when, the annotations would. So the hashes take each config
section without its execution fields (device, GPU share, batch size, the mask engine: they decide
where and how fast a stage runs, not what it writes), and take a weights file by its content, not
by its path (the same checkpoint on a laptop and on a cluster gives the same ids). The preview is drawn from the
annotations, so its settings key only the preview stage, never a clip id.

* ``content_hash(cfg)``: part of every clip id (``plan.clip_id``) and the ``config_hash`` column.
* ``frames_key``: one clip's frames (source bytes, frame range, decode settings); the root of the
  per-stage keys.
* ``stage_key``: the output of one stage on one clip: its own settings plus the keys of the stages
  whose outputs it reads. A filter-only change therefore changes only the filter stages' keys, and
  the stage cache (``stage_cache.py``) serves detection, masks and pose from the earlier run.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from pydantic import BaseModel

# Fields that decide where and how fast a stage runs, never what it computes.
EXECUTION_FIELDS = frozenset({"device", "gpus", "batch", "engine"})
# Fields that name a weights file or folder: keyed by content.
WEIGHT_FIELDS = frozenset({"weights"})
# Sections that do not enter the clip id (drawn from the annotations; keyed per stage only).
DERIVED_SECTIONS = frozenset({"preview"})


def short_hash(payload: Any, length: int = 16) -> str:
    """Stable hash of a JSON-able payload (sorted keys, no whitespace)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def weights_identity(spec: str) -> str:
    """What a weights field stands for: an offline asset's registered checksum, a file's own
    sha256 (cached per path, mtime and size), a folder's file checksums, or the spec itself (an
    Ultralytics model ``*.yaml``, random init)."""
    from anycharv.assets import ASSETS

    if spec in ASSETS and not os.path.exists(spec):
        return "sha256:" + ASSETS[spec].sha256
    if os.path.isdir(spec):
        files = sorted(f for f in os.listdir(spec) if os.path.isfile(os.path.join(spec, f)))
        return "dir:" + short_hash({f: weights_identity(os.path.join(spec, f)) for f in files})
    if os.path.isfile(spec):
        from anycharv.hashing import sha256_file_cached

        return "sha256:" + sha256_file_cached(spec)
    return "spec:" + spec


def section_payload(section: BaseModel) -> dict[str, Any]:
    """A config section as it enters a key: execution fields dropped, weights by content."""
    data = section.model_dump(mode="json", exclude=set(EXECUTION_FIELDS))
    for name in WEIGHT_FIELDS & data.keys():
        data[name] = weights_identity(data[name])
    if data.get("dwpose_dir"):  # the DWPose backend's weights are two files in a folder
        folder = data.pop("dwpose_dir")
        for name in ("dwpose_det_file", "dwpose_pose_file"):
            path = os.path.join(folder, data[name])
            data[name] = weights_identity(path) if os.path.exists(path) else "missing:" + data[name]
    return data


def content_hash(cfg: BaseModel) -> str:
    """Hash of everything in a preprocessing config that changes the annotations."""
    sections = {name: section_payload(getattr(cfg, name)) for name in type(cfg).model_fields
                if name not in DERIVED_SECTIONS and isinstance(getattr(cfg, name), BaseModel)}
    return short_hash(sections)


def frames_key(source_digest: str, start: int, end: int, decode: BaseModel) -> str:
    """Key of one clip's decoded frames: the root of its stage keys."""
    return short_hash({"source": source_digest, "start": start, "end": end, "decode": section_payload(decode)}, 32)


def stage_key(stage_name: str, settings: Any, upstream: list[str]) -> str:
    """Key of one stage's output on one clip (``upstream``: the keys it depends on)."""
    return short_hash({"stage": stage_name, "settings": settings, "upstream": upstream}, 32)
