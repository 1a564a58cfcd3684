"""The job table of a batch-inference run: reading it (CSV, TSV or Parquet), checking each row, and
turning rows into tasks with safe output names and content-derived keys.

Columns: ``job_id``, ``reference``, ``video`` (required), and optional ``person``, ``steps``,
``guidance``, ``seed``, ``size``, ``start``, ``max_frames``, ``output``; an empty cell takes the
config's default. Other columns are ignored (and listed). A table that cannot be read, has no rows
or lacks a required column is one ``InputError`` naming the table (and the column); everything
else is a per-row rejection with a reason code, and the other rows run:

* ``duplicate_job_id``: every row of an id that appears more than once;
* ``bad_value``: an empty id, reference or video, a number that is not one or is out of range;
* ``not_found``: a reference or video file that does not exist (relative paths are relative to the
  table's folder);
* ``bad_output``: an output name that would leave the output folder (absolute, a drive, ``..``),
  does not end in ``.mp4``, or is the output of another row too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from anycharv.errors import InputError
from anycharv.executor.task import Task

REQUIRED = ("job_id", "reference", "video")
OPTIONAL = ("person", "steps", "guidance", "seed", "size", "start", "max_frames", "output")
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".parquet": None, ".pq": None}
_SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(kw_only=True)
class BatchTask(Task):
    """One row of the job table on its way through the batch stage (paths and numbers only)."""

    job_id: str
    row: int  # 1-based data row of the table
    reference: str = ""  # absolute paths once checked
    video: str = ""
    person: int | None = None
    steps: int = 30
    guidance: float = 3.0
    seed: int = 0
    size: int = 576
    start: int = 0
    max_frames: int | None = None
    output: str = ""  # relative to OUT/videos, sanitised
    stem: str = ""  # the job id as a safe file name (previews, state records)
    key: str = ""
    # Filled by the stage.
    frames: int = 0
    fps: float = 0.0
    seconds: float = 0.0
    track_id: int | None = None
    audio: str = ""  # "aac" (source audio muxed), "none" (no audio in the source / off), "failed: ..."
    units: int = 1  # the executor's work units: frames asked for (1 when unknown)

    @property
    def task_id(self) -> str:
        return self.job_id


@dataclass
class JobTable:
    path: str
    rows: list[dict[str, Any]]  # column -> raw value (None where empty)
    columns: list[str]
    ignored_columns: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- reading
def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _read_csv(path: Path, delimiter: str) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise InputError(f"jobs {path}", "the table is empty (no header row)", code="empty_table")
            columns = [h.strip().lower() for h in header]
            rows = []
            for number, cells in enumerate(reader, start=2):
                if not any(c.strip() for c in cells):
                    continue  # blank line
                if len(cells) > len(columns):
                    raise InputError(f"jobs {path}", f"line {number} has {len(cells)} cells for {len(columns)} "
                                                     "columns (a value with a comma needs quotes)", code="bad_table")
                cells = cells + [""] * (len(columns) - len(cells))
                rows.append({c: (v if v.strip() else None) for c, v in zip(columns, cells)})
    except UnicodeDecodeError as exc:
        raise InputError(f"jobs {path}", f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                         code="bad_table") from None
    except csv.Error as exc:
        raise InputError(f"jobs {path}", f"not a readable CSV table ({exc})", code="bad_table") from None
    return columns, rows


def _read_parquet(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise InputError(f"jobs {path}", f"not a readable Parquet file ({type(exc).__name__}: {exc})",
                         code="bad_table") from None
    names = [str(n).strip().lower() for n in table.column_names]
    table = table.rename_columns(names)
    rows = [{k: (None if _is_empty(v) else v) for k, v in row.items()} for row in table.to_pylist()]
    return names, rows


def read_job_table(path: str | os.PathLike) -> JobTable:
    """The rows of the job table at ``path``. InputError (the whole table) when the file is missing
    or unreadable, has no rows, repeats a column, or lacks a required column (named)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise InputError(f"jobs {path}", "file not found" if not path.exists() else "is not a file", code="not_found")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"jobs {path}", f"expected a .csv, .tsv or .parquet job table, got {suffix or 'no suffix'}",
                         code="bad_table")
    delimiter = TABLE_SUFFIXES[suffix]
    columns, rows = _read_parquet(path) if delimiter is None else _read_csv(path, delimiter)
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise InputError(f"jobs {path}", f"column(s) {', '.join(repeated)} appear more than once", code="bad_table")
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputError(f"jobs {path}", f"missing required column(s) {', '.join(missing)} (columns found: "
                                         f"{', '.join(columns) or 'none'}; required: {', '.join(REQUIRED)})",
                         code="missing_column")
    if not rows:
        raise InputError(f"jobs {path}", "the table has no job rows", code="empty_table")
    ignored = [c for c in columns if c not in REQUIRED and c not in OPTIONAL]
    return JobTable(str(path), rows, columns, ignored)


# ----------------------------------------------------------------------------------------- names
def safe_stem(job_id: str) -> str:
    """The job id as a file name: as it is when it is a plain name (letters, digits, ``._-``, at most
    100), else its unsafe characters replaced and a short hash of the id added (so two ids never
    share a name)."""
    if _SAFE_STEM.fullmatch(job_id) and not job_id.endswith("."):
        return job_id
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", job_id).strip("._-")[:60] or "job"
    return f"{slug}-{hashlib.sha256(job_id.encode()).hexdigest()[:8]}"


def sanitise_output(name: str | None, stem: str) -> str:
    """The output file name relative to the videos folder (default ``<stem>.mp4``); InputError
    (``bad_output``) for anything that could be written outside it or is not an .mp4."""
    if name is None or not str(name).strip():
        return f"{stem}.mp4"
    text = str(name).strip()
    quoted = repr(text)
    if any(ord(ch) < 32 or ch == "\x7f" for ch in text):
        raise InputError(f"output {quoted}", "contains control characters", code="bad_output")
    if "\\" in text:
        raise InputError(f"output {quoted}", "contains a backslash; separate folders with /", code="bad_output")
    if text.startswith(("/", "~")) or _DRIVE.match(text):
        raise InputError(f"output {quoted}", "must be a name relative to the output folder (no absolute path, "
                                             "drive or ~)", code="bad_output")
    parts = [p for p in PurePosixPath(text).parts if p != "."]
    if ".." in parts:
        raise InputError(f"output {quoted}", "must not contain '..' (nothing is written outside the output folder)",
                         code="bad_output")
    if not parts or PurePosixPath(parts[-1]).suffix.lower() != ".mp4" or parts[-1].lower() == ".mp4":
        raise InputError(f"output {quoted}", "must be a file name ending in .mp4", code="bad_output")
    return "/".join(parts)


def inside(root: Path, relative: str) -> Path:
    """``root/relative``, refused (``bad_output``) when it resolves outside ``root`` (e.g. through a
    symbolic link inside the output folder)."""
    root = root.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise InputError(f"output {relative!r}", f"resolves to {target}, outside {root}", code="bad_output")
    return target


# ----------------------------------------------------------------------------------------- values
def _integer(value: Any, column: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool):
        raise InputError(column, f"expected a whole number, got {value!r}", code="bad_value")
    try:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, float):
            if not math.isfinite(number) or number != int(number):
                raise ValueError
            number = int(number)
        number = int(number)
    except (TypeError, ValueError):
        raise InputError(column, f"expected a whole number, got {value!r}", code="bad_value") from None
    if number < low or (high is not None and number > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InputError(column, f"must be {bounds}, got {number}", code="bad_value")
    return number


def _real(value: Any, column: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(column, f"expected a number, got {value!r}", code="bad_value") from None
    if isinstance(value, bool) or not math.isfinite(number) or not low <= number <= high:
        raise InputError(column, f"must be a number in [{low:g}, {high:g}], got {value!r}", code="bad_value")
    return number


def _input_file(value: Any, column: str, base: Path) -> str:
    if _is_empty(value):
        raise InputError(column, "is empty", code="bad_value")
    path = Path(str(value).strip()).expanduser()
    path = (path if path.is_absolute() else base / path).resolve()
    if not path.exists():
        raise InputError(f"{column} {path}", "file not found", code="not_found")
    if not path.is_file():
        raise InputError(f"{column} {path}", "is not a file", code="not_found")
    return str(path)


def _fill(task: BatchTask, row: dict[str, Any], base: Path, defaults) -> None:
    def get(column: str, default: Any) -> Any:
        value = row.get(column)
        return default if _is_empty(value) else value

    task.reference = _input_file(row.get("reference"), "reference", base)
    task.video = _input_file(row.get("video"), "video", base)
    person = get("person", None)
    task.person = None if person is None else _integer(person, "person", 0)
    task.steps = _integer(get("steps", defaults.steps), "steps", 1, 1000)
    task.guidance = _real(get("guidance", defaults.guidance), "guidance", 0.0, 50.0)
    task.seed = _integer(get("seed", defaults.seed), "seed", 0, 2**63 - 1)
    task.size = _integer(get("size", defaults.size), "size", 16)
    if task.size % 8:
        raise InputError("size", f"must be a multiple of 8 (the VAE factor), got {task.size}", code="bad_value")
    task.start = _integer(get("start", defaults.start), "start", 0)
    max_frames = get("max_frames", defaults.max_frames)
    task.max_frames = None if max_frames is None else _integer(max_frames, "max_frames", 1)
    task.units = task.max_frames or 1
    task.output = sanitise_output(row.get("output"), task.stem)


def _job_id(value: Any) -> str:
    """A cell of the ``job_id`` column as text (a Parquet number column: 7.0 -> "7")."""
    if _is_empty(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _unique_stems(job_ids: set[str]) -> dict[str, str]:
    """``safe_stem`` of each id, with the hash suffix added to ids whose names would differ only in
    case ("A" and "a" would share a preview and a state record on a case-insensitive file system)."""
    stems = {job_id: safe_stem(job_id) for job_id in job_ids}
    groups: dict[str, list[str]] = {}
    for job_id, stem in stems.items():
        groups.setdefault(stem.lower(), []).append(job_id)
    for same in groups.values():
        if len(same) > 1:
            for job_id in same:
                stems[job_id] = f"{safe_stem(job_id)[:60]}-{hashlib.sha256(job_id.encode()).hexdigest()[:8]}"
    return stems


def plan_jobs(table: JobTable, defaults, default_size: int) -> list[BatchTask]:
    """One task per row, in table order: ok, or rejected with the first problem found.
    ``defaults`` is a ``BatchConfig`` (its ``size`` may be None: then ``default_size``)."""
    base = Path(table.path).parent
    defaults = defaults.model_copy(update={"size": defaults.size or default_size})
    ids = [_job_id(r.get("job_id")) for r in table.rows]
    rows_of: dict[str, list[int]] = {}
    for number, job_id in enumerate(ids, start=1):
        rows_of.setdefault(job_id, []).append(number)
    stems = _unique_stems(set(rows_of) - {""})
    tasks = []
    for number, (job_id, row) in enumerate(zip(ids, table.rows), start=1):
        task = BatchTask(job_id=job_id, row=number, stem=stems.get(job_id, ""))
        tasks.append(task)
        if not job_id:
            task.reject("bad_value", f"row {number}: job_id is empty")
            continue
        if len(rows_of[job_id]) > 1:
            task.reject("duplicate_job_id", f"job {job_id}: the id appears in rows "
                                            f"{', '.join(map(str, rows_of[job_id]))} of {table.path} (job ids must "
                                            "be unique)")
            continue
        try:
            _fill(task, row, base, defaults)
        except InputError as exc:
            task.reject(exc.code, f"job {job_id}: {exc}")
    claimed: dict[str, list[BatchTask]] = {}
    for task in tasks:
        if task.ok:
            claimed.setdefault(task.output.lower(), []).append(task)
    for same in claimed.values():
        if len(same) > 1:
            names = ", ".join(t.job_id for t in same)
            for task in same:
                task.reject("bad_output", f"job {task.job_id}: output {task.output!r} is also the output of jobs "
                                          f"{names} (names are compared ignoring case)")
    return tasks


# ----------------------------------------------------------------------------------------- keys
WEIGHT_SUFFIXES = {".json", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".yaml", ".txt"}


def folder_identity(path: str | os.PathLike) -> str:
    """A model folder by the content of its weight and config files (a copy is the same model)."""
    from anycharv.hashing import sha256_file_cached

    root = Path(path).expanduser()
    if root.is_file():
        return "sha256:" + sha256_file_cached(root)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES):
        digest.update(f"{file.relative_to(root).as_posix()}:{sha256_file_cached(file)}\n".encode())
    return "dir:" + digest.hexdigest()[:16]


def model_identity(weights: str | None, preset: str | None, vae: str | None = None,
                   image_encoder: str | None = None) -> dict[str, str]:
    """What the model is, for the jobs' keys: a preset by name, local folders by content, a hub
    id by name."""
    if preset:
        out = {"preset": preset}
    elif weights and Path(weights).expanduser().exists():
        out = {"weights": folder_identity(weights)}
    else:
        out = {"weights": f"hub:{weights}"}
    for name, value in (("vae", vae), ("image_encoder", image_encoder)):
        if value:
            out[name] = folder_identity(value)
    return out


def job_key(task: BatchTask, digests: dict[str, str], shared: dict[str, Any]) -> str:
    """Hash of what decides a job's output: its row's effective settings, the content of its
    reference and video, and ``shared`` (the model identity and the run's settings)."""
    payload = {"reference": digests[task.reference], "video": digests[task.video], "person": task.person,
               "steps": task.steps, "guidance": task.guidance, "seed": task.seed, "size": task.size,
               "start": task.start, "max_frames": task.max_frames, "output": task.output, **shared}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]
