"""What a changed config leaves behind, listed, and removed only when asked (``anycharv preprocess
--gc``).

Clip ids include the config's content hash, so a rerun under other settings publishes new clip
folders and the old ones stay (an earlier manifest, or a user, may still read them). Unreferenced
means: not a row of the current manifest (``manifest/clips.parquet``). The stage-cache entries that
no referenced clip uses and input records of other configs go with them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from anycharv.errors import InputError
from anycharv.preprocessing.finalize import OutputLayout, load_records, read_json, unlink_quiet
from anycharv.preprocessing.stage_cache import StageCache


@dataclass
class Unreferenced:
    """Everything under an output folder that the current manifest does not use."""

    clip_dirs: list[Path] = field(default_factory=list)
    clip_states: list[Path] = field(default_factory=list)
    input_states: list[Path] = field(default_factory=list)
    cache_entries: list[tuple[str, str]] = field(default_factory=list)
    work_dirs: list[Path] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.clip_dirs or self.clip_states or self.input_states or self.cache_entries or self.work_dirs)

    def lines(self) -> list[str]:
        out = [f"clip folder {p}" for p in self.clip_dirs]
        out += [f"clip record {p}" for p in self.clip_states]
        out += [f"input record {p}" for p in self.input_states]
        out += [f"stage cache {stage}/{key}" for stage, key in self.cache_entries]
        out += [f"unfinished work {p}" for p in self.work_dirs]
        return out


def find_unreferenced(layout: OutputLayout) -> Unreferenced:
    """What the current manifest does not reference (nothing is changed)."""
    if not layout.manifest_path.is_file():
        raise InputError(str(layout.root), "no manifest/clips.parquet: nothing to compare against "
                         "(run preprocess first)", code="no_manifest")
    rows = pq.read_table(layout.manifest_path, columns=["clip_id", "kind", "config_hash"]).to_pylist()
    clips = {r["clip_id"] for r in rows if r["kind"] == "clip"}
    hashes = {r["config_hash"] for r in rows}
    found = Unreferenced()
    found.clip_dirs = sorted(d for d in layout.clips.iterdir() if d.is_dir() and d.name not in clips)
    used_keys: set[tuple[str, str]] = set()
    for path in sorted(layout.clip_states.glob("*.json")):
        if path.stem in clips:
            used_keys.update(read_json(path).get("stage_keys", {}).items())
        else:
            found.clip_states.append(path)
    for path, record in zip(sorted(layout.input_states.glob("*.json")), load_records(layout.input_states)):
        if record.get("config_hash") not in hashes:
            found.input_states.append(path)
    found.cache_entries = [e for e in StageCache(layout.stage_cache).entries() if e not in used_keys]
    found.work_dirs = sorted(d for d in layout.work.iterdir() if d.is_dir()) if layout.work.is_dir() else []
    return found


def remove_unreferenced(layout: OutputLayout, found: Unreferenced) -> int:
    """Delete what ``find_unreferenced`` listed; returns how many items went."""
    cache = StageCache(layout.stage_cache)
    for path in found.clip_states + found.input_states:
        unlink_quiet(path)  # records first: a crash in between leaves folders a rerun ignores
    for path in found.clip_dirs + found.work_dirs:
        shutil.rmtree(path, ignore_errors=True)
    for stage, key in found.cache_entries:
        cache.remove(stage, key)
    return len(found.lines())
