"""The shards are plain WebDataset tars: readable by ``webdataset`` and ``tarfile`` alone, member
names ``<key>.<field>`` with a key without dots and an extension the codec knows."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from anycharv.datasets import schema
from anycharv.datasets.shard_index import read_index

fx = sys.modules["anycharv_test_cache_fixtures"]  # registered by conftest.py
EXTENSIONS = {"npy", "json", "png"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    fx.make_cache(root, fx.clips(4) + [fx.Clip("wide", 9, height=64, width=96)], per_shard=2)
    fx.make_selfboost(root / "boost", fx.clips(2))
    return root


def all_shards(cache: Path) -> list[Path]:
    shards = sorted((cache / "shards").rglob("*.tar")) + sorted((cache / "boost" / "shards").rglob("*.tar"))
    assert len(shards) == 4  # 2 + 1 (wide bucket) stage-1, 1 self-boost
    return shards


def test_plain_tarfile_sees_key_dot_field_members(cache):
    for shard in all_shards(cache):
        with tarfile.open(shard) as tar:
            names = [m.name for m in tar.getmembers()]
            assert names and all(m.isfile() for m in tar.getmembers())
            for name in names:
                key, _, field = name.partition(".")
                assert key and "/" not in name and field.rsplit(".", 1)[-1] in EXTENSIONS, name
            meta = json.loads(tar.extractfile(next(n for n in names if n.endswith(".meta.json"))).read())
            assert meta["schema_version"] == schema.SCHEMA_VERSION


@pytest.mark.filterwarnings("ignore::ResourceWarning")  # plain WebDataset leaves its shard files to the GC
def test_plain_webdataset_reads_every_sample(cache):
    seen = {}
    for shard in all_shards(cache):
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            key = sample["__key__"]
            assert "." not in key
            fields = {k for k in sample if not k.startswith("__")}
            assert fields and all(f.rsplit(".", 1)[-1] in EXTENSIONS for f in fields)
            seen[(shard.parent.parent.name, key)] = fields  # the two sets share keys (they join on them)
            if schema.LATENTS in fields:
                latents = np.load(io.BytesIO(sample[schema.LATENTS]), allow_pickle=False)
                assert latents.shape == (8, 4, 8, 8) or latents.shape == (8, 4, 8, 12)
    stage1 = {k: f for (s, k), f in seen.items() if s == "stage1"}
    assert set(stage1) == {"clip00", "clip01", "clip02", "clip03", "wide"}
    assert all(f == set(schema.stage1_fields(2)) for f in stage1.values())
    assert {k: f for (s, k), f in seen.items() if s == "selfboost"} == {
        "clip00": set(schema.selfboost_fields()), "clip01": set(schema.selfboost_fields())}


def test_index_offsets_point_at_the_member_bytes(cache):
    for sample in read_index(cache / "shards"):
        with tarfile.open(sample.shard) as tar, open(sample.shard, "rb") as fh:
            for field, (offset, size) in sample.members.items():
                fh.seek(offset)
                assert fh.read(size) == tar.extractfile(f"{sample.clip_id}.{field}").read()
