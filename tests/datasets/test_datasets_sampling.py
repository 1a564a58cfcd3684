"""Which samples each (rank, DataLoader worker) reads: exactly once / padded / dropped, seeded per
epoch, and the resampled webdataset stream; through real DataLoader worker processes."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from anycharv.datasets.sampling import epoch_order, slot_positions, world
from anycharv.datasets.stage1 import Stage1ImageDataset, Stage1VideoDataset
from anycharv.datasets.stage2 import Stage2Dataset
from anycharv.errors import InputError

fx = sys.modules["anycharv_test_cache_fixtures"]  # registered by conftest.py

NUM_CLIPS = 7  # odd: 2 ranks x 2 workers do not divide it


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    fx.make_cache(root, fx.clips(NUM_CLIPS, frames=6), per_shard=3)
    return root


def epoch_ids(cache: Path, rank: int, *, epoch: int = 0, seed: int = 5, num_workers: int = 2, **kw) -> list[str]:
    ds = Stage1ImageDataset(cache, rank=rank, world_size=2, seed=seed, **kw)
    ds.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=None, num_workers=num_workers)
    return [s["clip_id"] for s in loader]


def test_uneven_none_reads_every_sample_exactly_once_over_ranks_and_workers(cache):
    per_rank = [epoch_ids(cache, r, uneven="none") for r in (0, 1)]
    union = per_rank[0] + per_rank[1]
    assert sorted(union) == [f"clip{i:02d}" for i in range(NUM_CLIPS)]
    assert abs(len(per_rank[0]) - len(per_rank[1])) <= 1


def test_pad_gives_equal_counts_per_rank_and_covers_everything(cache):
    per_rank = [epoch_ids(cache, r, uneven="pad") for r in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == 4  # 7 padded to 8 = 2 ranks x 2 workers x 2
    counts = Counter(per_rank[0] + per_rank[1])
    assert set(counts) == {f"clip{i:02d}" for i in range(NUM_CLIPS)} and max(counts.values()) == 2


def test_drop_gives_equal_counts_without_duplicates(cache):
    per_rank = [epoch_ids(cache, r, uneven="drop") for r in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1]) == 3
    assert len(set(per_rank[0] + per_rank[1])) == 6


def test_order_is_seeded_per_epoch(cache):
    first = [epoch_ids(cache, r, uneven="none", epoch=0) for r in (0, 1)]
    assert first == [epoch_ids(cache, r, uneven="none", epoch=0) for r in (0, 1)]  # same seed, same order
    assert first != [epoch_ids(cache, r, uneven="none", epoch=1) for r in (0, 1)]
    assert first != [epoch_ids(cache, r, uneven="none", epoch=0, seed=6) for r in (0, 1)]


def test_per_sample_randomness_does_not_depend_on_the_worker_count(cache):
    def frames(num_workers):
        ds = Stage1ImageDataset(cache, rank=0, world_size=1, uneven="none", sample_posterior=False)
        return sorted((s["clip_id"], s["frame_index"], s["mask_variant"])
                      for s in DataLoader(ds, batch_size=None, num_workers=num_workers))

    assert frames(0) == frames(2)


def test_epoch_order_and_slots_unit():
    order = epoch_order(10, seed=1, epoch=0, world_size=3, num_workers=2, uneven="pad")
    assert len(order) == 12 and sorted(set(order.tolist())) == list(range(10))
    shares = [list(slot_positions(12, rank=r, world_size=3, worker=w, num_workers=2)) for r in range(3)
              for w in range(2)]
    assert sorted(p for s in shares for p in s) == list(range(12)) and {len(s) for s in shares} == {2}
    assert len(epoch_order(10, seed=1, epoch=0, world_size=3, num_workers=2, uneven="drop")) == 9
    assert not np.array_equal(epoch_order(10, seed=1, epoch=0, world_size=1, num_workers=1, uneven="none"),
                              epoch_order(10, seed=1, epoch=1, world_size=1, num_workers=1, uneven="none"))
    # one sample, four slots: everyone reads it (padding repeats it), nobody gets zero
    assert epoch_order(1, seed=0, epoch=0, world_size=2, num_workers=2, uneven="pad").tolist() == [0] * 4


@pytest.mark.parametrize("uneven", ["none", "drop"])
def test_fewer_samples_than_ranks_is_an_error_naming_the_dataset(tmp_path, uneven):
    fx.make_cache(tmp_path, fx.clips(1))
    with pytest.raises(InputError, match=r"Stage1ImageDataset\(.*1 samples for 2 ranks"):
        Stage1ImageDataset(tmp_path, rank=0, world_size=2, uneven=uneven)
    assert len(list(Stage1ImageDataset(tmp_path, rank=1, world_size=2, uneven="pad"))) == 1


def test_zero_samples_is_an_error():
    with pytest.raises(InputError, match="no samples"):
        epoch_order(0, seed=0, epoch=0, world_size=1, num_workers=1, uneven="pad", name="mine")


def test_rank_defaults_without_torch_distributed():
    assert world() == (0, 1)
    assert world(1, 4) == (1, 4)
    with pytest.raises(InputError):
        world(4, 4)


def resampled_stream(cache: Path, rank: int, epoch: int = 0, n: int = 5) -> list[tuple[str, int]]:
    ds = Stage1ImageDataset(cache, rank=rank, world_size=2, mode="resampled", samples_per_epoch=n, seed=3)
    ds.set_epoch(epoch)
    return [(s["clip_id"], s["frame_index"]) for s in DataLoader(ds, batch_size=None, num_workers=2)]


def test_resampled_with_epoch_yields_the_asked_number_per_worker_deterministically(cache):
    stream = resampled_stream(cache, rank=0)
    assert len(stream) == 10  # 5 per worker, 2 workers
    assert stream == resampled_stream(cache, rank=0)
    assert stream[0::2] != stream[1::2]  # the DataLoader alternates workers; their streams differ
    assert stream != resampled_stream(cache, rank=1)
    assert stream != resampled_stream(cache, rank=0, epoch=1)
    assert {c for c, _ in stream} <= {f"clip{i:02d}" for i in range(NUM_CLIPS)}


def test_resampled_keeps_the_split_and_bucket(tmp_path):
    fx.make_cache(tmp_path, fx.clips(3) + [fx.Clip("valclip", 9, split="val")])
    ds = Stage1ImageDataset(tmp_path, split="val", mode="resampled", samples_per_epoch=4)
    assert {s["clip_id"] for s in ds} == {"valclip"}


def test_resampled_stage2_and_video_streams(tmp_path):
    cache, boost = tmp_path / "cache", tmp_path / "boost"
    fx.make_cache(cache, fx.clips(4, frames=8))
    fx.make_selfboost(boost, fx.clips(4, frames=8)[:3])
    pairs = list(Stage2Dataset(cache, boost, num_frames=4, mode="resampled", samples_per_epoch=6))
    assert len(pairs) == 6 and {s["clip_id"] for s in pairs} <= {"clip00", "clip01", "clip02"}
    assert all(s["input_latents"].shape == s["latents"].shape == (4, 4, 8, 8) for s in pairs)
    videos = list(Stage1VideoDataset(cache, num_frames=3, sample_rate=3, mode="resampled", samples_per_epoch=5))
    assert len(videos) == 5 and all(v["frame_indices"].tolist() == [v["frame_indices"][0] + 3 * k for k in range(3)]
                                    for v in videos)
