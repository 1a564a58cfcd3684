"""The content digests of input files seen before, by path, size and modification time.

A rerun looks an unchanged input up here instead of hashing it again, and so finds its stored
plan without starting Ray: a rerun with nothing left to do starts no cluster at all. An entry is
used only while the file's size and mtime are the ones it was hashed at.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from anycharv.atomic import atomic_write_json


def file_stamp(path: str) -> tuple[int, int]:
    """(size, mtime in ns) of a file, the condition under which a stored digest holds."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


class SourceIndex:
    """Digest records under ``folder`` (``OutputLayout.source_index``), one JSON file per path."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def _entry(self, path: str) -> Path:
        return self.folder / (hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:24] + ".json")

    def lookup(self, path: str) -> str | None:
        """The stored digest of ``path`` if the file is unchanged since it was hashed, else None."""
        try:
            entry = json.loads(self._entry(path).read_text())
            size, mtime_ns = file_stamp(path)
        except (OSError, ValueError):
            return None
        stamp = (entry.get("size"), entry.get("mtime_ns"))
        if entry.get("path") != os.path.abspath(path) or stamp != (size, mtime_ns):
            return None
        return entry.get("digest") or None

    def store(self, path: str, digest: str, size: int, mtime_ns: int) -> None:
        atomic_write_json(self._entry(path), {"path": os.path.abspath(path), "size": size, "mtime_ns": mtime_ns,
                                              "digest": digest})
