"""Input videos: expanding patterns into files, their keys and records, and the plan job (probe and
split each input, a stage like any other so every backend runs it)."""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from anycharv.errors import InputError
from anycharv.executor.stage import Stage, StageResources
from anycharv.executor.task import REJECTED, RETRY_REASONS
from anycharv.preprocessing.finalize import read_json
from anycharv.preprocessing.records import ClipTask, InputTask
from anycharv.preprocessing.source_index import file_stamp

PlanFn = Callable[[str, Any, str], "list[ClipTask]"]
DigestFn = Callable[[str], str]

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """Absolute paths of the inputs: globs are expanded, folders give the videos inside them. A
    pattern that matches nothing is kept as is, so that it gets its ``not_found`` row."""
    out: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                out.append(os.path.abspath(pattern))
            for match in matches:
                out.extend(_expand_path(match))
        else:
            out.extend(_expand_path(pattern))
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def require_inputs(patterns: Sequence[str]) -> list[str]:
    """``expand_inputs``, but an error (before any work starts) when no pattern gives an existing
    file, naming each pattern and why it gave nothing."""
    sources = expand_inputs(patterns)
    if any(os.path.isfile(s) for s in sources):
        return sources
    why = []
    for pattern in patterns:
        path = os.path.expanduser(str(pattern))
        if glob.has_magic(path):
            why.append(f"{pattern!r} matches no file")
        elif os.path.isdir(path):
            why.append(f"folder {pattern!r} holds no video ({', '.join(sorted(VIDEO_EXTENSIONS))})")
        else:
            why.append(f"{pattern!r} does not exist")
    raise InputError("--input", "no input video: " + "; ".join(why or ["no pattern given"]), code="no_input")


def _expand_path(path: str) -> list[str]:
    if os.path.isdir(path):
        return sorted(
            os.path.abspath(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files
            if Path(f).suffix.lower() in VIDEO_EXTENSIONS
        )
    return [os.path.abspath(path)]


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def input_key(source_digest: str, cfg_hash: str) -> str:
    """Content-derived key of an input video under one config."""
    return "in-" + _short_hash(f"{source_digest}:{cfg_hash}")


def path_key(source: str, cfg_hash: str) -> str:
    """Key of an input that could not be read at all (so it has no digest): derived from its path."""
    return "in-" + _short_hash(f"path:{source}:{cfg_hash}")


def input_rejection(source: str, cfg_hash: str, reason: str, detail: str) -> dict[str, Any]:
    """The record of an input that gives no clips and could not be hashed (keyed by its path)."""
    return {"kind": "input", "source": source, "config_hash": cfg_hash, "source_digest": "",
            "key": path_key(source, cfg_hash), "status": REJECTED, "reason": reason, "detail": detail, "clips": []}


def plan_input(source: str, cfg: Any, cfg_hash: str, work_root: str, input_states: str, resume: bool,
               plan_fn: PlanFn, digest_fn: DigestFn) -> dict[str, Any]:
    """Probe and split one input. Returns its input record; a finished input's stored record when
    resuming; a rejection record (with the reason code) for a bad input. The record's ``stamp``
    (size, mtime) is what its digest was computed at (for ``SourceIndex``)."""
    if not os.path.isfile(source):
        return input_rejection(source, cfg_hash, "not_found", f"{source}: no such file")
    try:
        stamp = file_stamp(source)
        digest = digest_fn(source)
    except InputError as exc:
        return input_rejection(source, cfg_hash, exc.code, str(exc))
    except OSError as exc:
        return input_rejection(source, cfg_hash, "unreadable", f"{source}: {exc}")
    record = dict(input_rejection(source, cfg_hash, "", ""), source_digest=digest, key=input_key(digest, cfg_hash),
                  stamp=list(stamp))
    stored = Path(input_states) / f"{record['key']}.json"
    if resume and stored.exists():
        previous = read_json(stored)
        if previous.get("reason") not in RETRY_REASONS:
            return dict(previous, cached=True, stamp=list(stamp))
    try:
        clips = plan_fn(source, cfg, work_root)
    except InputError as exc:
        return dict(record, reason=exc.code, detail=str(exc))
    except Exception as exc:  # an unexpected failure on one input is recorded; the batch goes on
        return dict(record, reason="plan_error", detail=f"{source}: {type(exc).__name__}: {exc}")
    if not clips:
        return dict(record, reason="no_clips", detail=f"{source}: no clip passed the split rules")
    return dict(record, status="planned", clips=[c.to_dict() for c in clips])


class PlanStage(Stage):
    """Probe and split input videos (``plan_input``). Light and IO-bound: it reserves no CPU, so it
    never waits behind the clip stages' workers."""

    name = "plan"
    resources = StageResources(cpus=0.0, gpus=0.0)
    batch_size = 1

    def __init__(self, cfg: Any, cfg_hash: str, work_root: str, input_states: str, resume: bool, plan_fn: PlanFn,
                 digest_fn: DigestFn):
        super().__init__()
        self.args = (cfg, cfg_hash, work_root, input_states, resume, plan_fn, digest_fn)

    def process_one(self, task: InputTask) -> InputTask:
        task.record = plan_input(task.source, *self.args)
        return task
