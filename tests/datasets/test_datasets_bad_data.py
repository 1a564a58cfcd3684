"""Bad cache data: strict readers raise an InputError naming shard, sample and problem; lenient ones
skip the sample, count it per reason and log one warning for it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from anycharv.datasets import schema
from anycharv.datasets.shard_index import read_index
from anycharv.datasets.stage1 import Stage1ImageDataset, Stage1VideoDataset
from anycharv.datasets.stage2 import Stage2Dataset
from anycharv.errors import InputError

fx = sys.modules["anycharv_test_cache_fixtures"]  # registered by conftest.py
ALL = {f"clip{i:02d}" for i in range(6)}


def shard_of(root: Path, clip_id: str) -> Path:
    return next(s.shard for s in read_index(root / "shards") if s.clip_id == clip_id)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "anycharv.datasets" and r.levelno == logging.WARNING]


def ids(dataset) -> list[str]:
    return [s["clip_id"] for s in dataset]


def test_missing_shard(tmp_path, caplog):
    fx.make_cache(tmp_path, fx.clips(6), per_shard=3)
    shard = shard_of(tmp_path, "clip04")
    shard.unlink()
    with pytest.raises(InputError, match="shard file missing") as err:
        Stage1ImageDataset(tmp_path)
    assert str(shard) in str(err.value) and "sample clip0" in str(err.value) and err.value.code == "missing_shard"
    with caplog.at_level(logging.WARNING, logger="anycharv.datasets"):
        ds = Stage1ImageDataset(tmp_path, strict=False, uneven="none")
    assert ds.stats == {"missing_shard": 3}
    assert len(warnings_of(caplog)) == 3 and all(str(shard) in m for m in warnings_of(caplog))
    assert sorted(ids(ds)) == ["clip00", "clip01", "clip02"]


def test_truncated_shard(tmp_path, caplog):
    fx.make_cache(tmp_path, fx.clips(6), per_shard=3)
    shard = shard_of(tmp_path, "clip04")
    row = next(s for s in read_index(tmp_path / "shards") if s.clip_id == "clip04")
    data = shard.read_bytes()
    shard.write_bytes(data[: row.members[schema.LATENTS][0] + 10])  # cut inside clip04's latents
    with pytest.raises(InputError, match="truncated") as err:
        Stage1ImageDataset(tmp_path)
    assert str(shard) in str(err.value) and "sample clip04" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="anycharv.datasets"):
        ds = Stage1ImageDataset(tmp_path, strict=False, uneven="none")
    assert ds.stats == {"corrupt_member": 2}  # clip04 and clip05; clip03 is whole
    assert len(warnings_of(caplog)) == 2
    assert sorted(ids(ds)) == ["clip00", "clip01", "clip02", "clip03"]


def corrupt_member(root: Path, clip_id: str, field: str) -> Path:
    """Overwrite a member's bytes in place (same size): only reading it can tell."""
    row = next(s for s in read_index(root / "shards") if s.clip_id == clip_id)
    offset, size = row.members[field]
    with open(row.shard, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * size)
    return row.shard


def test_corrupt_member_found_while_reading(tmp_path, caplog):
    fx.make_cache(tmp_path, fx.clips(6), per_shard=3)
    shard = corrupt_member(tmp_path, "clip01", schema.KEYPOINTS)
    ds = Stage1ImageDataset(tmp_path, uneven="none")
    with pytest.raises(InputError, match="does not decode") as err:
        ids(ds)
    assert str(shard) in str(err.value) and "sample clip01" in str(err.value) and schema.KEYPOINTS in str(err.value)
    with caplog.at_level(logging.WARNING, logger="anycharv.datasets"):
        ds = Stage1ImageDataset(tmp_path, strict=False, uneven="none")
        assert sorted(ids(ds)) == sorted(ALL - {"clip01"})
    assert ds.stats == {"corrupt_member": 1} and len(warnings_of(caplog)) == 1


def test_pad_mode_replaces_a_bad_sample_so_ranks_keep_equal_counts(tmp_path):
    fx.make_cache(tmp_path, fx.clips(6), per_shard=3)
    corrupt_member(tmp_path, "clip01", schema.KEYPOINTS)
    per_rank = [ids(Stage1ImageDataset(tmp_path, strict=False, rank=r, world_size=2)) for r in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == 3
    assert set(per_rank[0] + per_rank[1]) <= ALL - {"clip01"}


def test_schema_version_mismatch(tmp_path, caplog):
    fx.make_cache(tmp_path, fx.clips(3) + [fx.Clip("oldclip", 7, schema_version=schema.SCHEMA_VERSION - 1)])
    shard = shard_of(tmp_path, "oldclip")
    with pytest.raises(InputError, match="schema_version") as err:
        ids(Stage1VideoDataset(tmp_path, num_frames=4, uneven="none"))
    assert str(shard) in str(err.value) and "sample oldclip" in str(err.value) and err.value.code == "schema_mismatch"
    with caplog.at_level(logging.WARNING, logger="anycharv.datasets"):
        ds = Stage1VideoDataset(tmp_path, num_frames=4, uneven="none", strict=False)
        assert sorted(ids(ds)) == ["clip00", "clip01", "clip02"]
    assert ds.stats == {"schema_mismatch": 1}
    assert len(warnings_of(caplog)) == 1 and "oldclip" in warnings_of(caplog)[0]


def test_sample_missing_a_member(tmp_path, caplog):
    fx.make_cache(tmp_path, fx.clips(3) + [fx.Clip("holey", 7, omit=(schema.KEYPOINTS,))])
    shard = shard_of(tmp_path, "holey")
    with pytest.raises(InputError, match="keypoints.npy' missing") as err:
        Stage1ImageDataset(tmp_path)
    assert str(shard) in str(err.value) and "sample holey" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="anycharv.datasets"):
        ds = Stage1ImageDataset(tmp_path, strict=False, uneven="none")
    assert ds.stats == {"missing_member": 1} and len(warnings_of(caplog)) == 1
    assert sorted(ids(ds)) == ["clip00", "clip01", "clip02"]


def test_missing_augmented_variant_is_found_when_picked(tmp_path):
    fx.make_cache(tmp_path, fx.clips(2) + [fx.Clip("novariant", 7, omit=(schema.masked_latents(2),))])
    ds = Stage1ImageDataset(tmp_path, strict=False, uneven="none", augment_prob=1.0, seed=1)
    ds.set_epoch(0)
    got = []
    for epoch in range(6):  # variant 2 is picked half of the time
        ds.set_epoch(epoch)
        got += ids(ds)
    assert ds.stats.get("missing_member", 0) >= 1 and "clip00" in got


def test_resampled_mode_skips_bad_samples_once(tmp_path, caplog):
    fx.make_cache(tmp_path, fx.clips(3) + [fx.Clip("oldclip", 7, schema_version=0)], per_shard=2)
    with caplog.at_level(logging.WARNING, logger="anycharv.datasets"):
        ds = Stage1ImageDataset(tmp_path, strict=False, mode="resampled", samples_per_epoch=30)
        got = ids(ds)
    assert len(got) == 30 and "oldclip" not in got
    assert ds.stats == {"schema_mismatch": 1} and len(warnings_of(caplog)) == 1
    with pytest.raises(InputError, match="oldclip"):
        ids(Stage1ImageDataset(tmp_path, mode="resampled", samples_per_epoch=30))


def test_too_short_clips_are_counted_not_errors(tmp_path):
    fx.make_cache(tmp_path, fx.clips(3, frames=8) + [fx.Clip("short", 7, frames=4)])
    ds = Stage1VideoDataset(tmp_path, num_frames=3, sample_rate=2, uneven="none")  # needs 5 frames
    assert ds.stats == {"too_short": 1}
    assert sorted(ids(ds)) == ["clip00", "clip01", "clip02"]
    with pytest.raises(InputError, match="shorter than 9 frames"):
        Stage1VideoDataset(tmp_path, num_frames=5, sample_rate=2)


def test_selfboost_sample_without_original(tmp_path, caplog):
    cache, boost = tmp_path / "cache", tmp_path / "boost"
    fx.make_cache(cache, fx.clips(3))
    fx.make_selfboost(boost, fx.clips(3) + [fx.Clip("orphan", 9)])
    with pytest.raises(InputError, match="no stage-1 sample") as err:
        Stage2Dataset(cache, boost, num_frames=4)
    assert "sample orphan" in str(err.value) and "selfboost" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="anycharv.datasets"):
        ds = Stage2Dataset(cache, boost, num_frames=4, strict=False, uneven="none")
    assert ds.stats == {"missing_original": 1} and len(warnings_of(caplog)) == 1
    assert sorted(ids(ds)) == ["clip00", "clip01", "clip02"]


def test_members_a_reader_does_not_need_are_not_read(tmp_path):
    fx.make_cache(tmp_path, fx.clips(3))
    for clip_id, field in [("clip00", schema.BOXES), ("clip01", schema.LATENTS_STD), ("clip02", schema.mask(2))]:
        corrupt_member(tmp_path, clip_id, field)
    ds = Stage1ImageDataset(tmp_path, sample_posterior=False, augment_prob=0.0, uneven="none")
    assert sorted(ids(ds)) == ["clip00", "clip01", "clip02"] and ds.stats == {}


def test_strict_errors_reach_the_main_process_from_dataloader_workers(tmp_path):
    fx.make_cache(tmp_path, fx.clips(3) + [fx.Clip("oldclip", 7, schema_version=0)])
    loader = DataLoader(Stage1ImageDataset(tmp_path), batch_size=None, num_workers=2)
    # torch re-raises a worker's exception by calling its type with the message alone: still an InputError.
    with pytest.raises(InputError, match=r"train-\d+\.tar \(sample oldclip\): schema_version 0"):
        list(loader)


def test_resampled_truncated_shard_keeps_its_whole_samples(tmp_path, caplog):
    fx.make_cache(tmp_path, fx.clips(6), per_shard=3)
    shard = shard_of(tmp_path, "clip04")
    row = next(s for s in read_index(tmp_path / "shards") if s.clip_id == "clip04")
    shard.write_bytes(shard.read_bytes()[: row.members[schema.LATENTS][0] + 10])
    with caplog.at_level(logging.WARNING, logger="anycharv.datasets"):
        ds = Stage1ImageDataset(tmp_path, strict=False, mode="resampled", samples_per_epoch=40)
        got = set(ids(ds))
    assert got == {"clip00", "clip01", "clip02", "clip03"}
    assert ds.stats == {"corrupt_member": 2, "corrupt_shard": 1}  # per sample at construction, the tar once
    assert len(warnings_of(caplog)) == 3
