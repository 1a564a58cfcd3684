"""The self-boost job's one stage: generate a clip with its planned reference, write the sample.

The stage-1 networks, the VAE and the cache's index are loaded once per worker (``setup``), on a
GPU when there is one. Each finished sample is a one-sample tar in the job's work folder
(``.work/samples/<clip_id>.tar``, written in one rename); the driver packs finished samples into
shards. A clip whose cached data is bad is rejected with the data's reason and the batch goes on.
"""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np

from anycharv.datasets import schema
from anycharv.datasets.codec import encode_json, encode_npy
from anycharv.datasets.sample_reader import SampleReader, shards_dir
from anycharv.datasets.shards import write_shard
from anycharv.datasets.stage1 import META_REQUIRED
from anycharv.devices import pick_device, pick_dtype
from anycharv.errors import InputError
from anycharv.executor.stage import Stage, StageResources
from anycharv.latent_cache.config import EncoderSource
from anycharv.self_boost.config import BoostConfig
from anycharv.self_boost.generate import decode_uint8, generate_clip, reference_inputs
from anycharv.self_boost.model_source import ModelSource, load_networks, load_vae
from anycharv.self_boost.pairs import hash_index, reference_frame
from anycharv.self_boost.plan import BoostTask
from anycharv.self_boost.preview import write_preview

# The sampler's latents before the VAE round trip (``boost.keep_raw_latents``); not in
# ``datasets.schema`` because no reader needs them (they are kept for analysis).
RAW_LATENTS = "generated_raw_latents.npy"
META_NEEDED = (*META_REQUIRED, "fps", "latent_dtype")


def sample_members(task: BoostTask, meta: dict, generated, cfg: BoostConfig, identity: dict) -> dict[str, bytes]:
    """The self-boost sample of ``task``: ``meta.json`` and ``generated_latents.npy`` (+ the raw ones)."""
    dtype = cfg.latent_dtype or meta["latent_dtype"]
    members = {schema.GENERATED_LATENTS: encode_npy(generated.latents.astype(dtype))}
    if cfg.keep_raw_latents:
        members[RAW_LATENTS] = encode_npy(generated.raw_latents.astype(dtype))
    members[schema.META] = encode_json({
        "schema_version": schema.SCHEMA_VERSION, "clip_id": task.clip_id, "num_frames": int(meta["num_frames"]),
        "reference_clip_id": task.reference_clip_id, "reference_source": task.reference_source,
        "reference_frame": task.reference_frame, "reference_bucket": task.reference_bucket,
        "source": task.source, "bucket": task.bucket, "split": task.split, "height": int(meta["height"]),
        "width": int(meta["width"]), "latent_height": int(meta["latent_height"]),
        "latent_width": int(meta["latent_width"]), "fps": meta["fps"], "model": identity["model"],
        "vae": identity["vae"], "seed": cfg.seed, "steps": cfg.steps, "guidance": cfg.guidance,
        "context_frames": cfg.context_frames, "context_overlap": cfg.context_overlap, "latent_dtype": dtype,
        "raw_latents": RAW_LATENTS if cfg.keep_raw_latents else None,
    })
    return members


class BoostStage(Stage):
    name: ClassVar[str] = "generate"
    resources: ClassVar[StageResources] = StageResources(cpus=1.0, gpus=1.0)
    batch_size: ClassVar[int] = 1

    def __init__(self, cfg: BoostConfig, model: ModelSource, encoders: EncoderSource, cache_dir: str,
                 samples_dir: str, previews_dir: str, identity: dict, *, vae: str | None = None,
                 device: str = "auto", dtype: str = "auto", vae_chunk: int = 8):
        super().__init__()
        self.cfg, self.model, self.encoders, self.vae_path = cfg, model, encoders, vae
        self.cache_dir, self.samples_dir, self.previews_dir = cache_dir, samples_dir, previews_dir
        self.identity = identity  # {"model": ..., "vae": ...}: what meta.json records
        self.device_spec, self.dtype_spec, self.vae_chunk = device, dtype, vae_chunk
        self.pipe = self.reader = self.by_id = None
        if device == "cpu" or not _cuda_available():
            self.resources = StageResources(cpus=1.0, gpus=0.0)

    def setup(self) -> None:
        import torch

        from anycharv.model.pipeline import AnyCharVPipeline

        device = pick_device(self.device_spec)
        dtype = pick_dtype(device, self.dtype_spec)
        networks = load_networks(self.model)
        for module in networks.values():
            module.to(device)
            if dtype != torch.float32:
                module.to(dtype)
        vae = load_vae(self.encoders, self.vae_path).to(device)  # float32: the cache encoded with it so
        self.pipe = AnyCharVPipeline.from_components({**networks, "vae": vae, "image_encoder": None})
        self.pipe.set_progress_bar_config(disable=True)
        self.reader = SampleReader(shards_dir(self.cache_dir))
        self.by_id = {s.clip_id: s for s in self.reader.samples if s.set == "stage1"}

    def teardown(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.pipe = self.reader = self.by_id = None

    def _view(self, clip_id: str):
        sample = self.by_id.get(clip_id)
        if sample is None:
            raise InputError(f"clip {clip_id}", f"not in the cache's index {self.reader.root}", code="missing_clip")
        self.reader.check(sample, [schema.META])
        view = self.reader.view(sample)
        return view, view.meta(META_NEEDED)

    def process_one(self, task: BoostTask) -> BoostTask:
        try:
            return self._generate(task)
        except InputError as exc:
            return task.reject(exc.code, str(exc))

    def _generate(self, task: BoostTask) -> BoostTask:
        view, meta = self._view(task.clip_id)
        ref_view, ref_meta = self._view(task.reference_clip_id)
        count = len(ref_view.array(schema.REF_LATENTS, 4, 1))
        task.reference_frame = reference_frame(self.cfg.seed, task.clip_id, count)
        vae = self.pipe.vae
        reference = reference_inputs(ref_view, ref_meta, task.reference_frame, vae, int(meta["height"]),
                                     int(meta["width"]))
        generated = generate_clip(self.pipe, view, meta, reference, steps=self.cfg.steps,
                                  guidance=self.cfg.guidance, noise_seed=hash_index(2**63, self.cfg.seed, "noise",
                                                                                    task.clip_id),
                                  context_frames=self.cfg.context_frames, context_overlap=self.cfg.context_overlap,
                                  chunk=self.vae_chunk)
        if not np.isfinite(generated.latents).all():  # a model that overflows (fp16): every rerun would too
            return task.reject("not_finite", f"clip {task.clip_id}: the generated latents are not finite "
                               f"(model {self.model.label}, dtype {self.dtype_spec})")
        members = sample_members(task, meta, generated, self.cfg, self.identity)
        path = os.path.join(self.samples_dir, f"{task.clip_id}.tar")
        write_shard(path, [(task.clip_id, members)])
        task.sample_path, task.num_frames = path, int(meta["num_frames"])
        task.sample_bytes = sum(len(v) for v in members.values())
        if task.preview:
            total = int(meta["num_frames"])
            original = decode_uint8(vae, view.array(schema.LATENTS, 4, total)[:total], self.vae_chunk)
            task.preview_path = str(write_preview(os.path.join(self.previews_dir, f"{task.clip_id}.mp4"), original,
                                                  generated.frames, generated.reference_image, float(meta["fps"])))
        return task


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
