"""The cache job's one stage: read a clip, build its images, encode them, write the sample.

The VAE and CLIP image encoder are loaded once per worker (``setup``), on a GPU when there is one.
Each finished sample is a one-sample tar in the job's work folder (``samples/<clip_id>.tar``,
written in one rename); the driver later packs finished samples into shards. A clip whose files
are bad is rejected with the reason (the batch goes on).
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np

from anycharv.datasets.shards import write_shard
from anycharv.devices import pick_device
from anycharv.errors import InputError
from anycharv.executor.stage import Stage, StageResources
from anycharv.latent_cache.clip_pixels import build_clip_pixels
from anycharv.latent_cache.config import CacheConfig, EncoderSource
from anycharv.latent_cache.encode import encode_clips
from anycharv.latent_cache.plan import CacheTask


def load_clip_inputs(task: CacheTask):
    """(frames, boxes, keypoints, masks) of a clip at its processing size."""
    from anycharv.preprocessing.annotations import load_masks
    from anycharv.preprocessing.video_io import read_frames

    loaders = {"boxes": lambda p: np.load(p, allow_pickle=False),
               "keypoints": lambda p: np.load(p, allow_pickle=False), "masks": load_masks}
    arrays = {}
    for name, load in loaders.items():
        path = task.annotations.get(name, "")
        try:
            arrays[name] = load(path)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"clip {task.clip_id}", f"cannot read its {name} annotation {path}: {exc}",
                             code="bad_annotations") from exc
    boxes, keypoints, masks = arrays["boxes"], arrays["keypoints"], arrays["masks"]
    frames = read_frames(task.source, task.start_frame, task.end_frame, (task.width, task.height))
    return frames, boxes, keypoints, masks


class EncodeStage(Stage):
    name: ClassVar[str] = "encode"
    resources: ClassVar[StageResources] = StageResources(cpus=1.0, gpus=1.0)
    batch_size: ClassVar[int] = 2

    def __init__(self, cfg: CacheConfig, source: EncoderSource, samples_dir: str, *, device: str = "auto",
                 vae_chunk: int = 16):
        super().__init__()
        self.cfg, self.source, self.samples_dir = cfg, source, samples_dir
        self.device_spec, self.vae_chunk = device, vae_chunk
        self.vae = self.image_encoder = self.processor = None
        if device == "cpu" or not _cuda_available():
            self.resources = StageResources(cpus=1.0, gpus=0.0)

    def setup(self) -> None:
        from transformers import CLIPImageProcessor

        from anycharv.model.components import load_encoders

        encoders = load_encoders(self.source.weights, preset=self.source.preset, vae=self.source.vae,
                                 image_encoder=self.source.image_encoder)
        device = pick_device(self.device_spec)
        self.vae = encoders["vae"].to(device)
        self.image_encoder = encoders["image_encoder"].to(device)
        self.processor = CLIPImageProcessor()

    def teardown(self) -> None:
        self.vae = self.image_encoder = self.processor = None

    def process_batch(self, tasks: list[CacheTask]) -> list[CacheTask]:
        self.ensure_setup()
        items = []
        for task in tasks:
            if not task.ok:
                continue
            try:
                frames, boxes, keypoints, masks = load_clip_inputs(task)
                items.append((task, build_clip_pixels(task, frames, boxes, keypoints, masks, self.cfg)))
            except InputError as exc:
                task.reject(exc.code, str(exc))
        if items:
            samples = encode_clips(items, self.vae, self.image_encoder, self.processor, chunk=self.vae_chunk,
                                   latent_dtype=self.cfg.latent_dtype)
            for (task, px), members in zip(items, samples):
                path = os.path.join(self.samples_dir, f"{task.clip_id}.tar")
                write_shard(path, [(task.clip_id, members)])
                task.sample_path, task.num_frames = path, len(px.frames)
                task.sample_bytes = sum(len(v) for v in members.values())
        return tasks


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
