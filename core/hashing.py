"""Content hashes of files: the basis of asset checksums and of content-derived clip keys."""

from __future__ import annotations

import hashlib
import os
import threading

_BLOCK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (videos and weights can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


_cache: dict[tuple[str, int, int], str] = {}
_cache_lock = threading.Lock()


def sha256_file_cached(path: str | os.PathLike) -> str:
    """``sha256_file``, remembered per (absolute path, mtime, size) for this process: videos and
    weights are hashed once however often their keys are needed. Raises OSError like ``os.stat``."""
    path = os.path.abspath(str(path))
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    digest = sha256_file(path)
    with _cache_lock:
        _cache[key] = digest
    return digest
