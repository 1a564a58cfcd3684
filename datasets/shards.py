"""Writing shards (deterministic tars that appear in one rename) and reading one member by offset.

A shard's bytes depend only on its samples: members sorted by key then field, every header with
mtime 0, uid/gid 0 and no user names, USTAR format. So a rerun or a resumed run writes the same
offsets, and ``index.parquet`` can point into the tar (``offset``, ``size`` of each member's data)
for random access without scanning it.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Iterable, Sequence

from anycharv.atomic import atomic_open
from anycharv.errors import InputError

BLOCK = tarfile.BLOCKSIZE


def check_key(key: str) -> str:
    if not key or "." in key or "/" in key:
        raise InputError("sample key", f"{key!r}: keys must be non-empty, without dots or slashes", code="bad_key")
    return key


def write_shard(path: str | os.PathLike, samples: Sequence[tuple[str, dict[str, bytes]]]) -> list[dict]:
    """Write ``samples`` (key, {field: bytes}) as the tar ``path``; returns, per sample, ``{"key",
    "members": {field: [offset, size]}, "sample_offset", "sample_size"}``. The file appears only
    when complete."""
    rows = []
    with atomic_open(path) as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, fields in sorted(samples, key=lambda s: s[0]):
            check_key(key)
            start = tar.offset
            members = {}
            for field in sorted(fields):
                data = fields[field]
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                header = tar.offset
                tar.addfile(info, io.BytesIO(data))
                members[field] = [header + BLOCK, len(data)]
            rows.append({"key": key, "members": members, "sample_offset": start,
                         "sample_size": tar.offset - start})
    return rows


def read_member(path: str | os.PathLike, offset: int, size: int, handle=None) -> bytes:
    """``size`` bytes at ``offset`` of shard ``path`` (``handle``: an open file of it, to reuse)."""
    fh = handle or open(path, "rb")
    try:
        fh.seek(offset)
        data = fh.read(size)
    finally:
        if handle is None:
            fh.close()
    if len(data) != size:
        raise InputError(str(path), f"truncated: {size} bytes expected at offset {offset}, got {len(data)}",
                         code="corrupt_shard")
    return data


def iter_tar_samples(path: str | os.PathLike) -> Iterable[tuple[str, dict[str, bytes]]]:
    """(key, {field: bytes}) of a shard in file order, read sequentially; InputError naming the shard
    when it is not a complete tar."""
    path = Path(path)
    try:
        with tarfile.open(path, mode="r:") as tar:
            key, fields = None, {}
            for info in tar:
                if not info.isfile():
                    continue
                name = os.path.basename(info.name)
                k, _, field = name.partition(".")
                if key is not None and k != key:
                    yield key, fields
                    fields = {}
                key = k
                fields[field] = tar.extractfile(info).read()
            if key is not None:
                yield key, fields
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(str(path), f"not a readable shard: {exc}", code="corrupt_shard") from exc
