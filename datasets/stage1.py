"""Stage-1 training samples (fine mask) from the latent cache: one frame for the image-level
phase, N-frame windows for the video-level phase.

Per sample and epoch, a seeded generator picks the frame(s), the mask variant (an augmented one
with probability ``augment_prob``, so the model does not learn the exact silhouette), one of the
clip's references, and the posterior noise (``latents + latents_std * eps``, as training on
``latent_dist.sample()`` does). Pose images are rendered here from the cached keypoints: at
512x512 that takes 0.15 ms (openpose18) to 0.4 ms (dwpose134), decoding a stored PNG of it 2.2 ms,
and the PNG (7-11 KB a frame) is 7-35x the size of the keypoints.
Arrays come out float32 in the model's layout: channels first, then frames for the video dataset.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch

from anycharv.datasets import schema
from anycharv.datasets.sample_reader import BadData, IndexedSample, SampleReader, SampleView, select, shards_dir
from anycharv.datasets.sampling import ShardDataset
from anycharv.errors import InputError
from anycharv.model.pose_render import render_pose

META_REQUIRED = ("num_frames", "height", "width", "latent_height", "latent_width", "keypoint_layout",
                 "mask_variants")


def window_length(num_frames: int, sample_rate: int) -> int:
    """Frames a window of ``num_frames`` taken every ``sample_rate`` frames spans."""
    return (num_frames - 1) * sample_rate + 1


def pick_window(total: int, num_frames: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Frame indices ``start + k * sample_rate`` with a uniformly random start."""
    start = int(rng.integers(0, total - window_length(num_frames, sample_rate) + 1))
    return start + sample_rate * np.arange(num_frames)


def pick_variant(num_variants: int, augment_prob: float, rng: np.random.Generator) -> int:
    """0 (the fine mask), or with probability ``augment_prob`` one of the augmented 1..V uniformly."""
    if num_variants > 0 and rng.random() < augment_prob:
        return int(rng.integers(1, num_variants + 1))
    return 0


def latent_frames(view: SampleView, meta: dict, frames: np.ndarray, rng: np.random.Generator,
                  sample_posterior: bool) -> np.ndarray:
    """(N,4,h,w) float32 target latents: the posterior mean, or a posterior sample."""
    tail = (4, meta["latent_height"], meta["latent_width"])
    mean = view.array(schema.LATENTS, 4, meta["num_frames"], tail)[frames].astype(np.float32)
    if not sample_posterior:
        return mean
    std = view.array(schema.LATENTS_STD, 4, meta["num_frames"], tail)[frames].astype(np.float32)
    return mean + std * rng.standard_normal(mean.shape, dtype=np.float32)


def pose_frames(view: SampleView, meta: dict, frames: np.ndarray) -> np.ndarray:
    """(3,N,H,W) float32 in [0,1]: the pose images the pose guider takes, rendered from keypoints
    straight into the model's layout (one float buffer, no transposed copy of N full-size frames)."""
    keypoints = view.array(schema.KEYPOINTS, 3, meta["num_frames"], (None, 3))
    height, width, layout = int(meta["height"]), int(meta["width"]), meta["keypoint_layout"]
    poses = np.empty((3, len(frames), height, width), np.float32)
    for i, t in enumerate(frames):
        poses[:, i] = render_pose(keypoints[t], layout, height, width).transpose(2, 0, 1)
    poses *= 1.0 / 255.0
    return poses


def pick_reference(view: SampleView, meta: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One of the clip's R references: its latent (4,h,w) and CLIP embedding (1,D), float32."""
    latents = view.array(schema.REF_LATENTS, 4, 1, (4, meta["latent_height"], meta["latent_width"]))
    clips = view.array(schema.REF_CLIP, 3, 1, (1, None))
    if len(latents) != len(clips):
        raise view.error(f"{len(latents)} reference latents but {len(clips)} CLIP embeddings", "schema_mismatch")
    j = int(rng.integers(0, len(latents)))
    return latents[j].astype(np.float32), clips[j].astype(np.float32)


def tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


class _Stage1Dataset(ShardDataset):
    """Selection of the stage-1 samples of one split and bucket, and the reading shared by both
    datasets (``_frames``: the latent-size fields with the frame axis first, poses (3,N,H,W))."""

    def __init__(self, cache_dir: str | os.PathLike, split: str, *, min_frames: int, bucket: str | None,
                 sample_posterior: bool, augment_prob: float, strict: bool, name: str, **sampling: Any):
        if not 0.0 <= augment_prob <= 1.0:
            raise InputError(name, f"augment_prob={augment_prob} is not in [0, 1]", code="bad_option")
        self.sample_posterior, self.augment_prob = sample_posterior, augment_prob
        reader = SampleReader(shards_dir(cache_dir))
        samples, self.bucket = select(reader, "stage1", split, bucket, name)
        policy = BadData(strict)
        usable = [s for s in samples if s.num_frames >= min_frames]
        if len(usable) < len(samples):
            policy.count("too_short", len(samples) - len(usable))
            if not usable:
                raise InputError(name, f"all {len(samples)} clips of {split}/{self.bucket} are shorter than "
                                 f"{min_frames} frames", code="empty_dataset")
        self.split = split
        super().__init__(name, reader, usable, policy=policy, **sampling)

    def _fields(self, sample: IndexedSample) -> Sequence[str]:
        fields = [schema.META, schema.LATENTS, schema.KEYPOINTS, schema.REF_LATENTS, schema.REF_CLIP,
                  schema.masked_latents(0), schema.mask(0)]
        return fields + [schema.LATENTS_STD] if self.sample_posterior else fields

    def _wanted(self, field: str) -> bool:
        if field in (schema.BOXES, schema.BOX_MASK):
            return False
        return self.sample_posterior or field != schema.LATENTS_STD

    def _frames(self, view: SampleView, meta: dict, frames: np.ndarray, rng: np.random.Generator) -> dict:
        variants = meta["mask_variants"]
        if not isinstance(variants, list) or not variants:
            raise view.error(f"meta mask_variants {variants!r} should list variant 0 and the augmented ones",
                             "schema_mismatch")
        k = pick_variant(len(variants) - 1, self.augment_prob, rng)
        lh, lw = meta["latent_height"], meta["latent_width"]
        total = meta["num_frames"]
        masked = view.array(schema.masked_latents(k), 4, total, (4, lh, lw))[frames]
        mask = view.array(schema.mask(k), 4, total, (1, lh, lw))[frames]
        ref_latent, ref_clip = pick_reference(view, meta, rng)
        return {
            "latents": latent_frames(view, meta, frames, rng, self.sample_posterior),
            "masked_latents": masked.astype(np.float32),
            "masks": mask.astype(np.float32),
            "poses": pose_frames(view, meta, frames),
            "ref_latent": ref_latent,
            "ref_clip": ref_clip,
            "mask_variant": k,
        }


class Stage1ImageDataset(_Stage1Dataset):
    """Image-level stage 1: per sample one random frame ``t`` of a clip.

    Yields ``latent`` (4,h,w), ``masked_latent`` (4,h,w), ``mask`` (1,h,w), ``pose`` (3,H,W) in
    [0,1], ``ref_latent`` (4,h,w), ``ref_clip`` (1,D) (float32 tensors), ``clip_id``,
    ``frame_index`` (``t``, the frame's position in the cached clip) and ``mask_variant``.

    ``sample_posterior``: target = a posterior sample (else its mean); ``augment_prob``: chance of
    an augmented mask; ``strict``: raise on bad data (else skip and count it in ``stats``); the
    sampling options are ``ShardDataset``'s."""

    def __init__(self, cache_dir: str | os.PathLike, split: str = "train", *, bucket: str | None = None,
                 sample_posterior: bool = True, augment_prob: float = 0.5, strict: bool = True,
                 mode: str = "exact", uneven: str = "pad", seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, samples_per_epoch: int | None = None, shuffle_buffer: int = 0):
        super().__init__(cache_dir, split, min_frames=1, bucket=bucket, sample_posterior=sample_posterior,
                         augment_prob=augment_prob, strict=strict, name=f"Stage1ImageDataset({cache_dir})",
                         mode=mode, uneven=uneven, seed=seed, rank=rank, world_size=world_size,
                         samples_per_epoch=samples_per_epoch, shuffle_buffer=shuffle_buffer)

    def _build(self, view: SampleView, rng: np.random.Generator) -> dict[str, Any]:
        meta = view.meta(META_REQUIRED)
        t = int(rng.integers(0, meta["num_frames"]))
        out = self._frames(view, meta, np.array([t]), rng)
        return {
            "latent": tensor(out["latents"][0]),
            "masked_latent": tensor(out["masked_latents"][0]),
            "mask": tensor(out["masks"][0]),
            "pose": tensor(out["poses"][:, 0]),
            "ref_latent": tensor(out["ref_latent"]),
            "ref_clip": tensor(out["ref_clip"]),
            "clip_id": view.key,
            "frame_index": t,
            "mask_variant": out["mask_variant"],
        }


class Stage1VideoDataset(_Stage1Dataset):
    """Video-level stage 1: per sample a window of ``num_frames`` frames ``start + k * sample_rate``.

    Yields ``latents``/``masked_latents`` (4,N,h,w), ``masks`` (1,N,h,w), ``poses`` (3,N,H,W),
    ``ref_latent`` (4,h,w), ``ref_clip`` (1,D), ``clip_id``, ``frame_indices`` (N,) int64 and
    ``mask_variant`` (one variant for the whole window). Clips shorter than the window are left
    out and counted in ``stats["too_short"]``."""

    def __init__(self, cache_dir: str | os.PathLike, split: str = "train", *, num_frames: int = 24,
                 sample_rate: int = 1, bucket: str | None = None, sample_posterior: bool = True,
                 augment_prob: float = 0.5, strict: bool = True, mode: str = "exact", uneven: str = "pad",
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 samples_per_epoch: int | None = None, shuffle_buffer: int = 0):
        name = f"Stage1VideoDataset({cache_dir})"
        if num_frames < 1 or sample_rate < 1:
            raise InputError(name, f"num_frames={num_frames}, sample_rate={sample_rate}: both must be >= 1",
                             code="bad_option")
        self.num_frames, self.sample_rate = num_frames, sample_rate
        super().__init__(cache_dir, split, min_frames=window_length(num_frames, sample_rate), bucket=bucket,
                         sample_posterior=sample_posterior, augment_prob=augment_prob, strict=strict, name=name,
                         mode=mode, uneven=uneven, seed=seed, rank=rank, world_size=world_size,
                         samples_per_epoch=samples_per_epoch, shuffle_buffer=shuffle_buffer)

    def _build(self, view: SampleView, rng: np.random.Generator) -> dict[str, Any]:
        meta = view.meta(META_REQUIRED)
        if meta["num_frames"] < window_length(self.num_frames, self.sample_rate):
            raise view.error(f"meta says {meta['num_frames']} frames, the index said enough for the window",
                             "schema_mismatch")
        frames = pick_window(meta["num_frames"], self.num_frames, self.sample_rate, rng)
        out = self._frames(view, meta, frames, rng)
        return {
            "latents": tensor(out["latents"].transpose(1, 0, 2, 3)),
            "masked_latents": tensor(out["masked_latents"].transpose(1, 0, 2, 3)),
            "masks": tensor(out["masks"].transpose(1, 0, 2, 3)),
            "poses": tensor(out["poses"]),
            "ref_latent": tensor(out["ref_latent"]),
            "ref_clip": tensor(out["ref_clip"]),
            "clip_id": view.key,
            "frame_indices": torch.from_numpy(frames.astype(np.int64)),
            "mask_variant": out["mask_variant"],
        }
