"""The Parquet manifest: one row per clip and one per rejected input, built from the run's state
records (so a crashed run's manifest can always be rebuilt).

Only plain Arrow types (string, int64, float64, bool; nulls where a value does not apply) so that
pandas, Polars and DuckDB read the file as it is. Columns:

* fixed: ``clip_id, kind ('clip'|'input'), source, source_digest, config_hash, status ('ok'|'rejected'),
  reason, detail, start_frame, end_frame, num_frames, fps, width, height, src_width, src_height,
  track_id, annotation_dir`` (relative to the output folder; empty for rejected rows)
* ``ann_<name>``: each annotation file, relative to the output folder (null for rejected clips)
* ``stat_<key>``: the stages' quality stats, nested keys joined with ``_``, lists as JSON text
* ``time_<stage>_s``: seconds spent per stage; with the stages' own ``stat_*_ms`` timings these are
  the only columns that differ between identical runs (``timing_columns``)

Rows are sorted by source, start frame and clip id, so equal runs give equal files.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from anycharv.atomic import atomic_write_bytes
from anycharv.executor.task import REJECTED
from anycharv.preprocessing.finalize import OutputLayout, load_records

FIXED_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("clip_id", pa.string()),
    ("kind", pa.string()),
    ("source", pa.string()),
    ("source_digest", pa.string()),
    ("config_hash", pa.string()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("start_frame", pa.int64()),
    ("end_frame", pa.int64()),
    ("num_frames", pa.int64()),
    ("fps", pa.float64()),
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("src_width", pa.int64()),
    ("src_height", pa.int64()),
    ("track_id", pa.int64()),
    ("annotation_dir", pa.string()),
]
TIMING_PREFIX = "time_"


def timing_columns(names: Iterable[str]) -> list[str]:
    """Columns that hold wall-clock timings (they differ between otherwise identical runs)."""
    return [n for n in names if n.startswith(TIMING_PREFIX) or (n.startswith("stat_") and n.endswith("_ms"))]


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}_{key}", sub, out)
    elif isinstance(value, (list, tuple)):
        out[prefix] = json.dumps(value)
    elif hasattr(value, "item") and callable(value.item):  # numpy scalar
        out[prefix] = value.item()
    else:
        out[prefix] = value


def clip_row(record: dict[str, Any], root: Path) -> dict[str, Any]:
    """One manifest row from a clip's completion record."""
    ok = record["status"] != REJECTED
    clip_dir = Path(record["work_dir"]) if ok and record.get("work_dir") else None
    row: dict[str, Any] = {name: record.get(name) for name, _ in FIXED_COLUMNS}
    row.update(kind="clip", num_frames=record["end_frame"] - record["start_frame"])
    row["annotation_dir"] = os.path.relpath(clip_dir, root) if clip_dir else ""
    for name, rel in sorted(record.get("annotations", {}).items()):
        row[f"ann_{name}"] = os.path.relpath(clip_dir / rel, root) if clip_dir else None
    stats: dict[str, Any] = {}
    for key, value in sorted(record.get("stats", {}).items()):
        _flatten(f"stat_{key}", value, stats)
    row.update(stats)
    for stage, seconds in sorted(record.get("timings", {}).items()):
        row[f"{TIMING_PREFIX}{stage}_s"] = float(seconds)
    return row


def input_row(record: dict[str, Any]) -> dict[str, Any]:
    """One manifest row for an input video that produced no clips (with its reason)."""
    row: dict[str, Any] = {name: None for name, _ in FIXED_COLUMNS}
    row.update(
        clip_id=record["key"], kind="input", source=record["source"], source_digest=record.get("source_digest", ""),
        config_hash=record["config_hash"], status=REJECTED, reason=record["reason"], detail=record.get("detail", ""),
        annotation_dir="",
    )
    return row


def _column_type(values: list[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if not present:
        return pa.string()
    if all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def _coerce(value: Any, dtype: pa.DataType) -> Any:
    if value is None:
        return None
    if dtype == pa.string():
        if isinstance(value, str):
            return value
        return str(value) if isinstance(value, (int, float, bool)) else json.dumps(value)
    if dtype == pa.float64():
        value = float(value)
        return None if math.isnan(value) else value
    return value


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Arrow table with the fixed columns first, then the extra columns in name order."""
    def order(r: dict[str, Any]) -> tuple:
        return (r.get("source") or "", r.get("start_frame") if r.get("start_frame") is not None else -1, r["clip_id"])

    rows = sorted(rows, key=order)
    fixed = dict(FIXED_COLUMNS)
    extra = sorted({k for row in rows for k in row} - set(fixed))
    names = [n for n, _ in FIXED_COLUMNS] + extra
    arrays, fields = [], []
    for name in names:
        values = [row.get(name) for row in rows]
        dtype = fixed.get(name) or _column_type(values)
        arrays.append(pa.array([_coerce(v, dtype) for v in values], type=dtype))
        fields.append(pa.field(name, dtype))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def collect_rows(layout: OutputLayout, config_hash: str | None = None) -> list[dict[str, Any]]:
    """Rows of every finished clip and rejected input under ``layout`` (of one config, if given)."""
    rows = []
    for record in load_records(layout.clip_states):
        if config_hash is None or record.get("config_hash") == config_hash:
            rows.append(clip_row(record, layout.root))
    for record in load_records(layout.input_states):
        if record.get("status") == REJECTED and (config_hash is None or record.get("config_hash") == config_hash):
            rows.append(input_row(record))
    return rows


def write_manifest(layout: OutputLayout, config_hash: str | None = None) -> Path:
    """Build the manifest from the state records and publish it atomically."""
    table = rows_to_table(collect_rows(layout, config_hash))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write_bytes(layout.manifest_path, buf.getvalue())
    return layout.manifest_path


def read_manifest(path: str | os.PathLike) -> pa.Table:
    return pq.read_table(path)
