"""Field shapes, dtypes and values of the stage-1 image/video and stage-2 datasets (the fixture's
values encode clip, frame and mask variant, see cache_fixtures.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from anycharv.datasets import schema
from anycharv.datasets.stage1 import Stage1ImageDataset, Stage1VideoDataset
from anycharv.datasets.stage2 import Stage2Dataset
from anycharv.errors import InputError
from anycharv.model.pose_render import render_pose

fx = sys.modules["anycharv_test_cache_fixtures"]  # registered by conftest.py
F, H, W, D = 10, 64, 64, 16
h, w = H // 8, W // 8


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    clips = fx.clips(3, frames=F) + [fx.Clip("halfclip", 3, frames=F, dtype="float16", layout="dwpose134")]
    return root, fx.make_cache(root, clips)


def expected_pose(clip, t: int) -> np.ndarray:
    image = render_pose(clip.arrays[schema.KEYPOINTS][t], clip.layout, clip.height, clip.width)
    return image.transpose(2, 0, 1).astype(np.float32) / 255


def test_image_fields(cache):
    root, clips = cache
    samples = list(Stage1ImageDataset(root, sample_posterior=False, uneven="none"))
    assert sorted(s["clip_id"] for s in samples) == sorted(clips)
    for s in samples:
        clip, t, k = clips[s["clip_id"]], s["frame_index"], s["mask_variant"]
        shapes = {name: tuple(s[name].shape) for name in ("latent", "masked_latent", "mask", "pose", "ref_latent",
                                                           "ref_clip")}
        assert shapes == {"latent": (4, h, w), "masked_latent": (4, h, w), "mask": (1, h, w), "pose": (3, H, W),
                          "ref_latent": (4, h, w), "ref_clip": (1, D)}
        assert all(s[name].dtype == torch.float32 for name in shapes)
        assert isinstance(t, int) and 0 <= t < F and isinstance(s["clip_id"], str)
        assert torch.all(s["latent"] == 100 * clip.number + t)
        assert torch.all(s["masked_latent"] == 100 * k + t)
        assert np.array_equal(s["mask"].numpy(), clip.arrays[schema.mask(k)][t].astype(np.float32))
        assert np.allclose(s["pose"].numpy(), expected_pose(clip, t)) and 0 <= s["pose"].min() <= s["pose"].max() <= 1
        j = int(s["ref_clip"][0, 0])
        assert torch.all(s["ref_latent"] == 100 * clip.number + 50 + j) and j in (0, 1)


def test_image_batches_collate(cache):
    root, _ = cache
    batch = next(iter(DataLoader(Stage1ImageDataset(root, bucket="64x64"), batch_size=2)))
    assert batch["latent"].shape == (2, 4, h, w) and batch["pose"].shape == (2, 3, H, W)
    assert len(batch["clip_id"]) == 2 and batch["frame_index"].dtype == torch.int64


def test_video_fields(cache):
    root, clips = cache
    n, rate = 4, 2
    samples = list(Stage1VideoDataset(root, num_frames=n, sample_rate=rate, uneven="none"))
    assert len(samples) == 4
    for s in samples:
        clip, k, frames = clips[s["clip_id"]], s["mask_variant"], s["frame_indices"]
        assert {name: tuple(s[name].shape) for name in ("latents", "masked_latents", "masks", "poses", "ref_latent",
                                                         "ref_clip", "frame_indices")} == {
            "latents": (4, n, h, w), "masked_latents": (4, n, h, w), "masks": (1, n, h, w), "poses": (3, n, H, W),
            "ref_latent": (4, h, w), "ref_clip": (1, D), "frame_indices": (n,)}
        assert frames.dtype == torch.int64 and torch.all(frames.diff() == rate) and 0 <= frames[0]
        assert frames[-1] < F
        for i, t in enumerate(frames.tolist()):
            assert torch.all(s["masked_latents"][:, i] == 100 * k + t)
            assert np.allclose(s["poses"][:, i].numpy(), expected_pose(clip, t))
            assert np.array_equal(s["masks"][:, i].numpy(), clip.arrays[schema.mask(k)][t].astype(np.float32))
        assert all(s[name].dtype == torch.float32 for name in ("latents", "masked_latents", "masks", "poses"))


def test_posterior_sample_moves_the_latent_by_the_std_scale_only(cache):
    root, clips = cache
    kw = dict(uneven="none", seed=7)
    means = {s["clip_id"]: s for s in Stage1VideoDataset(root, num_frames=4, sample_posterior=False, **kw)}
    noisy = {s["clip_id"]: s for s in Stage1VideoDataset(root, num_frames=4, sample_posterior=True, **kw)}
    eps = []
    for clip_id, s in noisy.items():
        mean = means[clip_id]
        assert torch.equal(s["frame_indices"], mean["frame_indices"])  # same draws, noise last
        diff = s["latents"] - mean["latents"]
        assert torch.all(diff[3] == 0)  # std is 0 on channel 3: nothing moves
        std = torch.tensor([0.1, 0.2, 0.3])[:, None, None, None]
        eps.append((diff[:3] / std).flatten())
    eps = torch.cat(eps)
    assert abs(float(eps.mean())) < 0.1 and 0.9 < float(eps.std()) < 1.1  # standard normal noise x std


@pytest.mark.parametrize("prob, allowed", [(0.0, {0}), (1.0, {1, 2})])
def test_augment_prob_extremes(cache, prob, allowed):
    root, _ = cache
    ds = Stage1ImageDataset(root, augment_prob=prob, sample_posterior=False, uneven="none")
    variants = []
    for epoch in range(5):
        ds.set_epoch(epoch)
        for s in ds:
            variants.append(s["mask_variant"])
            assert torch.all(s["masked_latent"] == 100 * s["mask_variant"] + s["frame_index"])
    assert set(variants) <= allowed and (prob == 0 or set(variants) == allowed)


def test_half_of_the_masks_are_augmented_by_default(cache):
    root, _ = cache
    ds = Stage1ImageDataset(root, sample_posterior=False, uneven="none")
    variants = []
    for epoch in range(40):
        ds.set_epoch(epoch)
        variants += [s["mask_variant"] for s in ds]
    share = np.mean(np.array(variants) > 0)
    assert 0.35 < share < 0.65


def test_several_buckets_need_a_bucket(tmp_path):
    fx.make_cache(tmp_path, fx.clips(2) + [fx.Clip("wide", 5, width=96)])
    with pytest.raises(InputError, match=r"buckets \['64x64', '64x96'\]"):
        Stage1ImageDataset(tmp_path)
    assert [s["clip_id"] for s in Stage1ImageDataset(tmp_path, bucket="64x96")] == ["wide"]
    assert next(iter(Stage1ImageDataset(tmp_path, bucket="64x96")))["pose"].shape == (3, 64, 96)
    with pytest.raises(InputError, match="no bucket '32x32'"):
        Stage1ImageDataset(tmp_path, bucket="32x32")
    with pytest.raises(InputError, match="no stage1 samples of split 'val'"):
        Stage1ImageDataset(tmp_path, split="val")


def test_stage2_fields(tmp_path):
    cache, boost = tmp_path / "cache", tmp_path / "boost"
    clips = fx.make_cache(cache, fx.clips(3, frames=F))
    fx.make_selfboost(boost, fx.clips(3, frames=F)[1:])
    n = 3
    samples = list(Stage2Dataset(cache, boost, num_frames=n, sample_posterior=False, uneven="none"))
    assert sorted(s["clip_id"] for s in samples) == ["clip01", "clip02"]
    for s in samples:
        clip, frames = clips[s["clip_id"]], s["frame_indices"].tolist()
        assert {name: tuple(s[name].shape) for name in ("input_latents", "latents", "masks", "poses", "ref_latent",
                                                         "ref_clip")} == {
            "input_latents": (4, n, h, w), "latents": (4, n, h, w), "masks": (1, n, h, w), "poses": (3, n, H, W),
            "ref_latent": (4, h, w), "ref_clip": (1, D)}
        for i, t in enumerate(frames):
            assert torch.all(s["input_latents"][:, i] == -(100 * clip.number + t))
            assert torch.all(s["latents"][:, i] == 100 * clip.number + t)
            assert np.array_equal(s["masks"][:, i].numpy(), clip.arrays[schema.BOX_MASK][t].astype(np.float32))
            assert np.allclose(s["poses"][:, i].numpy(), expected_pose(clip, t))
        assert torch.all(s["ref_latent"] == 100 * clip.number + 50 + int(s["ref_clip"][0, 0]))
        assert s["reference_clip_id"] == "someone"
