"""Stage-2 training samples: self-boost pairs joined with the stage-1 cache by clip id.

The self-boost job re-generated each clip with another clip's character; stage 2 teaches the
denoising UNet to put the original character back: input = the generated clip's latents, target
= the original latents, mask = the original's box (what inference has), pose and reference =
the original's. Only the self-boost set is split over ranks; originals are read by random access.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch

from anycharv.datasets import schema
from anycharv.datasets.sample_reader import (
    BadData,
    IndexedSample,
    SampleReader,
    SampleView,
    sample_error,
    select,
    shards_dir,
)
from anycharv.datasets.sampling import ShardDataset
from anycharv.datasets.stage1 import (
    META_REQUIRED,
    latent_frames,
    pick_reference,
    pick_window,
    pose_frames,
    tensor,
    window_length,
)
from anycharv.errors import InputError


class Stage2Dataset(ShardDataset):
    """Self-boost windows of ``num_frames`` frames ``start + k * sample_rate``.

    Yields ``input_latents`` (4,N,h,w, generated), ``latents`` (4,N,h,w, original: the target),
    ``masks`` (1,N,h,w, the original's box mask), ``poses`` (3,N,H,W), ``ref_latent`` (4,h,w),
    ``ref_clip`` (1,D) of the original, ``clip_id``, ``reference_clip_id`` (whose character the
    generation used) and ``frame_indices`` (N,) int64. A self-boost sample without its original
    in ``cache_dir`` is bad data (``stats["missing_original"]`` when not strict)."""

    def __init__(self, cache_dir: str | os.PathLike, selfboost_dir: str | os.PathLike, split: str = "train", *,
                 num_frames: int = 24, sample_rate: int = 1, bucket: str | None = None,
                 sample_posterior: bool = True, strict: bool = True, mode: str = "exact", uneven: str = "pad",
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 samples_per_epoch: int | None = None, shuffle_buffer: int = 0):
        name = f"Stage2Dataset({selfboost_dir})"
        if num_frames < 1 or sample_rate < 1:
            raise InputError(name, f"num_frames={num_frames}, sample_rate={sample_rate}: both must be >= 1",
                             code="bad_option")
        self.num_frames, self.sample_rate, self.sample_posterior = num_frames, sample_rate, sample_posterior
        self.split = split
        self.originals = SampleReader(shards_dir(cache_dir))
        self._original = {s.clip_id: s for s in self.originals.samples if s.set == "stage1"}
        reader = SampleReader(shards_dir(selfboost_dir))
        samples, self.bucket = select(reader, "selfboost", split, bucket, name)
        policy = BadData(strict)
        need = window_length(num_frames, sample_rate)
        usable = [s for s in samples if s.num_frames >= need]
        if len(usable) < len(samples):
            policy.count("too_short", len(samples) - len(usable))
            if not usable:
                raise InputError(name, f"all {len(samples)} self-boost clips of {split}/{self.bucket} are shorter "
                                 f"than {need} frames", code="empty_dataset")
        super().__init__(name, reader, usable, policy=policy, mode=mode, uneven=uneven, seed=seed, rank=rank,
                         world_size=world_size, samples_per_epoch=samples_per_epoch, shuffle_buffer=shuffle_buffer)

    def _close(self) -> None:
        super()._close()
        self.originals.close()

    def _fields(self, sample: IndexedSample) -> Sequence[str]:
        return schema.selfboost_fields()

    def _original_fields(self) -> list[str]:
        fields = [schema.META, schema.LATENTS, schema.BOX_MASK, schema.KEYPOINTS, schema.REF_LATENTS,
                  schema.REF_CLIP]
        return fields + [schema.LATENTS_STD] if self.sample_posterior else fields

    def _check(self, sample: IndexedSample) -> None:
        self.reader.check(sample, self._fields(sample))
        original = self._original.get(sample.clip_id)
        if original is None:
            raise sample_error(sample.shard, sample.clip_id, "no stage-1 sample of this clip id in "
                               f"{self.originals.root} to join with", "missing_original")
        self.originals.check(original, self._original_fields())

    def _build(self, view: SampleView, rng: np.random.Generator) -> dict[str, Any]:
        boost = view.meta(("num_frames",))
        original = self.originals.view(self._original[view.key])
        meta = original.meta(META_REQUIRED)
        if boost["num_frames"] != meta["num_frames"]:
            raise view.error(f"{boost['num_frames']} generated frames for a {meta['num_frames']}-frame original",
                             "schema_mismatch")
        total = int(meta["num_frames"])
        if total < window_length(self.num_frames, self.sample_rate):
            raise view.error(f"{total} frames, too few for the window", "schema_mismatch")
        lh, lw = meta["latent_height"], meta["latent_width"]
        frames = pick_window(total, self.num_frames, self.sample_rate, rng)
        generated = view.array(schema.GENERATED_LATENTS, 4, total, (4, lh, lw))[frames]
        box = original.array(schema.BOX_MASK, 4, total, (1, lh, lw))[frames]
        ref_latent, ref_clip = pick_reference(original, meta, rng)
        return {
            "input_latents": tensor(generated.transpose(1, 0, 2, 3)),
            "latents": tensor(latent_frames(original, meta, frames, rng, self.sample_posterior).transpose(1, 0, 2, 3)),
            "masks": tensor(box.transpose(1, 0, 2, 3)),
            "poses": tensor(pose_frames(original, meta, frames)),
            "ref_latent": tensor(ref_latent),
            "ref_clip": tensor(ref_clip),
            "clip_id": view.key,
            "reference_clip_id": str(boost.get("reference_clip_id", "")),
            "frame_indices": torch.from_numpy(frames.astype(np.int64)),
        }
