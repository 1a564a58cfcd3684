"""``shards/index.parquet``: one row per cached sample, pointing into its shard.

Columns: ``clip_id, set, shard`` (relative to ``shards/``), ``bucket, split, num_frames, source,
source_digest, schema_version, sample_offset, sample_size`` and ``members`` (JSON text
``{field: [offset, size]}``, so any member can be read without scanning the tar). Plain Arrow types,
rows sorted by shard then clip id, so equal caches give equal files.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from anycharv.atomic import atomic_write_bytes
from anycharv.errors import InputError

INDEX_NAME = "index.parquet"
COLUMNS: list[tuple[str, pa.DataType]] = [
    ("clip_id", pa.string()),
    ("set", pa.string()),
    ("shard", pa.string()),
    ("bucket", pa.string()),
    ("split", pa.string()),
    ("num_frames", pa.int64()),
    ("source", pa.string()),
    ("source_digest", pa.string()),
    ("schema_version", pa.int64()),
    ("sample_offset", pa.int64()),
    ("sample_size", pa.int64()),
    ("members", pa.string()),
]


def write_index(rows: list[dict], path: str | os.PathLike) -> Path:
    rows = sorted(rows, key=lambda r: (r["shard"], r["clip_id"]))
    table = pa.table({name: pa.array([_cell(r, name) for r in rows], type=dtype) for name, dtype in COLUMNS})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _cell(row: dict, name: str):
    value = row[name]
    return json.dumps(value, sort_keys=True) if name == "members" and not isinstance(value, str) else value


@dataclass(frozen=True)
class IndexedSample:
    clip_id: str
    set: str  # "stage1" | "selfboost"
    shard: Path  # absolute
    split: str
    bucket: str
    num_frames: int
    members: dict[str, tuple[int, int]]


def read_index(shards_dir: str | os.PathLike) -> list[IndexedSample]:
    """The samples of ``shards_dir/index.parquet``; InputError naming the file when it is missing or
    lacks columns."""
    root = Path(shards_dir)
    path = root / INDEX_NAME
    if not path.is_file():
        raise InputError(str(path), "no shard index here (was the cache job run on this folder?)",
                         code="no_index")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - any Parquet failure is a corrupt index
        raise InputError(str(path), f"not a readable Parquet index: {exc}", code="corrupt_index") from exc
    missing = [name for name, _ in COLUMNS if name not in table.column_names]
    if missing:
        raise InputError(str(path), f"index lacks columns {missing}", code="corrupt_index")
    return [IndexedSample(clip_id=r["clip_id"], set=r["set"], shard=root / r["shard"], split=r["split"],
                          bucket=r["bucket"], num_frames=int(r["num_frames"]),
                          members={k: (int(v[0]), int(v[1])) for k, v in json.loads(r["members"]).items()})
            for r in table.to_pylist()]
