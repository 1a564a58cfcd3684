"""Reading single members of cached samples, and what to do when the data is bad.

Training reads a few members of a sample (one mask variant of several, no boxes), so the reader
goes through ``shards/index.parquet`` and seeks to each member instead of streaming whole tars.
Every problem with the data becomes an ``InputError`` naming the shard, the sample key and the
member; ``BadData`` decides whether that stops the run (``strict``) or skips the sample, counted
per reason and logged once, so a long run survives a few broken clips and says which.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from anycharv.datasets import codec, schema
from anycharv.datasets.shard_index import INDEX_NAME, IndexedSample, read_index
from anycharv.datasets.shards import read_member
from anycharv.errors import InputError

LOG = logging.getLogger("anycharv.datasets")


class BadData:
    """Policy for bad samples: ``strict`` raises the error; otherwise the sample is skipped,
    ``stats[error.code]`` counts it and one warning is logged per skipped sample."""

    def __init__(self, strict: bool = True):
        self.strict = strict
        self.stats: dict[str, int] = {}

    def count(self, reason: str, n: int = 1) -> None:
        self.stats[reason] = self.stats.get(reason, 0) + n

    def skip(self, error: InputError) -> None:
        if self.strict:
            raise error
        self.count(error.code)
        LOG.warning("skipping bad sample (%s): %s", error.code, error)


def sample_error(shard: str | os.PathLike, key: str, reason: str, code: str) -> InputError:
    return InputError(f"{shard} (sample {key})", reason, code=code)


def shards_dir(cache_dir: str | os.PathLike) -> Path:
    """The folder holding ``index.parquet``: ``<cache_dir>/shards``, or ``cache_dir`` itself when
    that is where the index is."""
    root = Path(cache_dir)
    if not (root / "shards" / INDEX_NAME).is_file() and (root / INDEX_NAME).is_file():
        return root
    return root / "shards"


class SampleView:
    """The members of one sample, decoded on first use (``get``) through ``codec.decode``.
    Subclasses say where the bytes come from (``_raw``)."""

    def __init__(self, key: str, shard: str | os.PathLike, fields: Iterable[str]):
        self.key = key
        self.shard = str(shard)
        self.fields = frozenset(fields)
        self._values: dict[str, Any] = {}

    @property
    def where(self) -> str:
        return f"{self.shard} (sample {self.key})"

    def error(self, reason: str, code: str) -> InputError:
        return sample_error(self.shard, self.key, reason, code)

    def _raw(self, field: str) -> bytes:
        raise NotImplementedError

    def get(self, field: str) -> Any:
        if field not in self.fields:
            raise self.error(f"member {field!r} missing (has {sorted(self.fields)})", "missing_member")
        if field not in self._values:
            self._values[field] = codec.decode(field, self._raw(field), where=self.where)
        return self._values[field]

    def meta(self, required: Sequence[str] = ()) -> dict:
        """``meta.json``, checked against this reader's schema version, the key and ``required``."""
        meta = self.get(schema.META)
        if not isinstance(meta, dict):
            raise self.error("meta.json is not an object", "schema_mismatch")
        version = meta.get("schema_version")
        if version != schema.SCHEMA_VERSION:
            raise self.error(f"schema_version {version!r} in meta.json, this reader needs {schema.SCHEMA_VERSION}"
                             " (re-run the cache job)", "schema_mismatch")
        if meta.get("clip_id", self.key) != self.key:
            raise self.error(f"meta.json names clip {meta.get('clip_id')!r}", "schema_mismatch")
        missing = [k for k in required if k not in meta]
        if missing:
            raise self.error(f"meta.json lacks {missing}", "schema_mismatch")
        return meta

    def array(self, field: str, ndim: int, frames: int | None = None,
              tail: Sequence[int | None] | None = None) -> np.ndarray:
        """Member ``field`` as an array of ``ndim`` dims, with at least ``frames`` rows and trailing
        dims ``tail`` (None: any), so a bad shape is reported here and not by the collate function."""
        value = self.get(field)
        if not isinstance(value, np.ndarray) or value.ndim != ndim or value.dtype.kind not in "fiub":
            shape = getattr(value, "shape", type(value).__name__)
            raise self.error(f"member {field!r} should be a numeric array of {ndim} dims, has {shape}",
                             "schema_mismatch")
        if frames is not None and value.shape[0] < frames:
            raise self.error(f"member {field!r} has {value.shape[0]} rows, needs {frames}", "schema_mismatch")
        if tail is not None and any(t is not None and t != d for t, d in zip(tail, value.shape[1:])):
            raise self.error(f"member {field!r} has shape {value.shape}, expected (*, {tuple(tail)})",
                             "schema_mismatch")
        return value


class IndexedView(SampleView):
    """A sample read by offset through the index: only the members asked for are read."""

    def __init__(self, reader: SampleReader, sample: IndexedSample):
        super().__init__(sample.clip_id, sample.shard, sample.members)
        self.reader, self.sample = reader, sample

    def _raw(self, field: str) -> bytes:
        return self.reader.read(self.sample, field)


class StreamView(SampleView):
    """A sample as webdataset's ``tarfile_to_samples`` yields it: ``{"__key__", "__url__", field: bytes}``."""

    def __init__(self, sample: Mapping[str, Any]):
        self.data = {k: v for k, v in sample.items() if not k.startswith("__")}
        super().__init__(sample["__key__"], sample.get("__url__", "?"), self.data)

    def _raw(self, field: str) -> bytes:
        return self.data[field]


class SampleReader:
    """Random access to the samples of one ``shards/`` folder, with a small cache of open shard
    files. Handles are per process (a forked DataLoader worker must not share file offsets with
    its parent) and are dropped when pickled."""

    def __init__(self, root: str | os.PathLike, max_open: int = 16):
        self.root = Path(root)
        self.samples: list[IndexedSample] = read_index(self.root)
        self.max_open = max_open
        self._handles: OrderedDict[Path, Any] = OrderedDict()
        self._sizes: dict[Path, int | None] = {}
        self._pid = os.getpid()

    def view(self, sample: IndexedSample) -> IndexedView:
        return IndexedView(self, sample)

    def size(self, shard: Path) -> int | None:
        if shard not in self._sizes:
            try:
                self._sizes[shard] = shard.stat().st_size
            except OSError:
                self._sizes[shard] = None
        return self._sizes[shard]

    def check(self, sample: IndexedSample, fields: Iterable[str]) -> None:
        """What the index alone can tell about ``sample``: InputError when its shard is missing, one
        of ``fields`` is not a member, or the shard is too short to hold them (truncated copy)."""
        size = self.size(sample.shard)
        if size is None:
            raise sample_error(sample.shard, sample.clip_id, "shard file missing", "missing_shard")
        for field in fields:
            if field not in sample.members:
                raise sample_error(sample.shard, sample.clip_id, f"member {field!r} missing "
                                   f"(has {sorted(sample.members)})", "missing_member")
            offset, length = sample.members[field]
            if offset + length > size:
                raise sample_error(sample.shard, sample.clip_id, f"member {field!r} ends at byte "
                                   f"{offset + length}, the shard has {size} (truncated)", "corrupt_member")

    def read(self, sample: IndexedSample, field: str) -> bytes:
        """The bytes of member ``field`` of ``sample``; InputError (shard, key, member) on failure."""
        if field not in sample.members:
            raise sample_error(sample.shard, sample.clip_id, f"member {field!r} missing", "missing_member")
        offset, length = sample.members[field]
        try:
            return read_member(sample.shard, offset, length, handle=self._handle(sample.shard))
        except InputError as exc:
            raise sample_error(sample.shard, sample.clip_id, f"member {field!r}: {exc.reason}",
                               "corrupt_member") from exc
        except OSError as exc:
            raise sample_error(sample.shard, sample.clip_id, f"cannot read member {field!r}: {exc}",
                               "missing_shard") from exc

    def _handle(self, shard: Path):
        if self._pid != os.getpid():
            self._handles.clear()  # inherited through fork: the parent's, never close or seek them
            self._pid = os.getpid()
        fh = self._handles.pop(shard, None)
        if fh is None:
            fh = open(shard, "rb")
            while len(self._handles) >= self.max_open:
                self._handles.popitem(last=False)[1].close()
        self._handles[shard] = fh
        return fh

    def close(self) -> None:
        if self._pid == os.getpid():
            for fh in self._handles.values():
                fh.close()
        self._handles.clear()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()
        return state


def select(reader: SampleReader, set_name: str, split: str, bucket: str | None,
           name: str) -> tuple[list[IndexedSample], str]:
    """The samples of ``set_name``/``split`` in one bucket, and that bucket. A batch must not mix
    resolutions, so ``bucket`` is required when the split has several (InputError listing them)."""
    if split not in schema.SPLITS:
        raise InputError(name, f"split {split!r} is not one of {list(schema.SPLITS)}", code="bad_split")
    rows = [s for s in reader.samples if s.split == split and s.set == set_name]
    buckets = sorted({s.bucket for s in rows})
    if not buckets:
        raise InputError(name, f"no {set_name} samples of split {split!r} in {reader.root / INDEX_NAME}",
                         code="empty_dataset")
    if bucket is None:
        if len(buckets) > 1:
            raise InputError(name, f"split {split!r} has buckets {buckets}; pass bucket= (one per dataset)",
                             code="bucket_required")
        bucket = buckets[0]
    elif bucket not in buckets:
        raise InputError(name, f"no bucket {bucket!r} in split {split!r}; it has {buckets}", code="bad_bucket")
    return [s for s in rows if s.bucket == bucket], bucket
