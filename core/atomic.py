"""Crash-safe writes: readers see the old file, no file, or the whole new one, never a partial one.

Every writer in the project (annotations, run state, manifest, cached assets, videos) goes through
``atomic_path``: the data is written to a hidden temporary name in the destination folder and moved
over the final name with ``os.replace`` only when writing succeeded; on any error the temporary file
is removed. Temporary names start with ``TMP_PREFIX`` so a rerun after SIGKILL can sweep them.
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

TMP_PREFIX = ".tmp-"


def _temp_name(path: Path, keep_suffix: bool) -> Path:
    token = uuid.uuid4().hex[:12]
    if keep_suffix:  # e.g. PyAV picks the container from the suffix
        return path.with_name(f"{TMP_PREFIX}{path.stem}-{token}{path.suffix}")
    return path.with_name(f"{TMP_PREFIX}{path.name}-{token}.tmp")


@contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to write; it replaces ``path`` when the
    block finishes and is deleted when the block raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path, keep_suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file handle whose content appears under ``path`` (fsynced) only if the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path) as fh:
        fh.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, sort_keys=True, indent=1).encode())
