"""The evaluation's one stage: reconstruct a cached clip with the model and score it.

Per clip (self-reconstruction): the clip's own character as the reference (one of its cached
references, chosen by ``eval.seed``), its pose, and the condition ``eval.condition`` (``box``: its
own frames' latents with the padded box mask, what inference gives the model; ``fine``: the frames
with the fine mask blacked out, stage 1's input), sampled with ``AnyCharVPipeline.denoise`` from
noise seeded by the clip id. The result is decoded with the cache's VAE and compared with the
decoding of the clip's cached latents (the posterior means): a latent cache holds no pixels, so the
"original frames" are what its latents decode to, as in training validation. The region of the
``*_mask`` metrics is the condition's mask at pixel size (the padded box drawn from ``boxes.npy``;
the fine mask upsampled from latent size, nearest).

The model, the VAE, the metric networks and the cache's index are loaded once per worker
(``setup``), on a GPU when there is one. Bad data of one clip rejects that clip with the data's
reason and the batch goes on.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from anycharv.atomic import atomic_path, atomic_write_bytes
from anycharv.boxes import boxes_to_masks
from anycharv.datasets import schema
from anycharv.datasets.codec import encode_png
from anycharv.datasets.sample_reader import SampleReader, shards_dir
from anycharv.datasets.stage1 import META_REQUIRED, pose_frames
from anycharv.devices import pick_device, pick_dtype
from anycharv.errors import InputError
from anycharv.evaluation.config import EvalConfig
from anycharv.evaluation.plan import EvalTask, hash_index, noise_seed
from anycharv.executor.stage import Stage, StageResources
from anycharv.latent_cache.config import EncoderSource

MEMBERS = (schema.META, schema.LATENTS, schema.BOX_MASK, schema.BOXES, schema.KEYPOINTS, schema.REF_LATENTS,
           schema.REF_CLIP, schema.masked_latents(0), schema.mask(0))


class EvalStage(Stage):
    name: ClassVar[str] = "evaluate"
    resources: ClassVar[StageResources] = StageResources(cpus=1.0, gpus=1.0)

    def __init__(self, cfg: EvalConfig, model_dir: str, encoders: EncoderSource, cache_dir: str, previews_dir: str,
                 features_dir: str, clip_dim: int, *, device: str = "auto", dtype: str = "auto", vae_chunk: int = 8):
        super().__init__()
        self.cfg, self.model_dir, self.encoders, self.cache_dir = cfg, model_dir, encoders, cache_dir
        self.previews_dir, self.features_dir, self.clip_dim = previews_dir, features_dir, clip_dim
        self.device_spec, self.dtype_spec, self.vae_chunk = device, dtype, vae_chunk
        self.pipe = self.reader = self.by_id = self.metric_nets = None
        if device == "cpu" or not _cuda_available():
            self.resources = StageResources(cpus=1.0, gpus=0.0)

    def setup(self) -> None:
        import torch

        from anycharv.evaluation.feature_metrics import load_metric_networks
        from anycharv.model.components import load_encoders, load_networks
        from anycharv.model.pipeline import AnyCharVPipeline
        from anycharv.training.modules import check_context_width

        device = pick_device(self.device_spec)
        dtype = pick_dtype(device, self.dtype_spec)
        networks = load_networks(self.model_dir)
        check_context_width(networks, self.clip_dim, self.model_dir)
        for module in networks.values():
            module.to(device)
            if dtype != torch.float32:
                module.to(dtype)
        src = self.encoders
        vae = load_encoders(src.weights, preset=src.preset, vae=src.vae, image_encoder=src.image_encoder)["vae"]
        self.pipe = AnyCharVPipeline.from_components({**networks, "vae": vae.to(device), "image_encoder": None})
        self.pipe.set_progress_bar_config(disable=True)
        self.metric_nets = load_metric_networks(self.cfg, device)
        self.reader = SampleReader(shards_dir(self.cache_dir))
        self.by_id = {s.clip_id: s for s in self.reader.samples if s.set == "stage1"}

    def teardown(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.pipe = self.reader = self.by_id = self.metric_nets = None

    def process_one(self, task: EvalTask) -> EvalTask:
        try:
            return self._score(task)
        except InputError as exc:
            return task.reject(exc.code, str(exc))

    def _inputs(self, task: EvalTask):
        """The clip's latent-size inputs for the first ``task.frames`` frames, float32 tensors."""
        import torch

        sample = self.by_id.get(task.clip_id)
        if sample is None:
            raise InputError(f"clip {task.clip_id}", f"not in the cache's index {self.reader.root}",
                             code="missing_clip")
        self.reader.check(sample, MEMBERS)
        view = self.reader.view(sample)
        meta = view.meta((*META_REQUIRED, "reference_frames"))
        total, lh, lw = int(meta["num_frames"]), int(meta["latent_height"]), int(meta["latent_width"])
        frames = np.arange(min(task.frames, total))

        def video(field: str, channels: int) -> torch.Tensor:
            array = view.array(field, 4, total, (channels, lh, lw))[frames].astype(np.float32)
            return torch.from_numpy(array).permute(1, 0, 2, 3)[None]  # (1,C,N,h,w)

        target = video(schema.LATENTS, 4)
        if self.cfg.condition == "box":
            condition, mask = target, video(schema.BOX_MASK, 1)
        else:
            condition, mask = video(schema.masked_latents(0), 4), video(schema.mask(0), 1)
        ref_latents = view.array(schema.REF_LATENTS, 4, 1, (4, lh, lw))
        ref_clip = view.array(schema.REF_CLIP, 3, len(ref_latents), (1, self.clip_dim))
        j = hash_index(len(ref_latents), self.cfg.seed, "eval-reference", task.clip_id)
        references = meta["reference_frames"]
        task.reference_index = j
        task.reference_frame = int(references[j]) if j < len(references) else -1
        boxes = view.array(schema.BOXES, 2, total, (4,)).astype(np.float32)
        return view, meta, frames, target, condition, mask, ref_latents[j], ref_clip[j], boxes

    def _score(self, task: EvalTask) -> EvalTask:
        import torch
        import torch.nn.functional as F

        from anycharv.evaluation.feature_metrics import clip_metrics, set_features
        from anycharv.evaluation.metrics import pixel_metrics
        from anycharv.model.encoders import decode_latents, module_device_dtype
        from anycharv.training.validation import pair_strip

        view, meta, frames, target, condition, mask, ref_latent, ref_clip, boxes = self._inputs(task)
        pipe, chunk = self.pipe, self.vae_chunk
        device, dtype = module_device_dtype(pipe.pose_guider)
        with torch.no_grad():
            poses = torch.from_numpy(pose_frames(view, meta, frames))[None]  # (1,3,N,H,W)
            pose = torch.cat([pipe.pose_guider(poses[:, :, s:s + chunk].to(device, dtype))
                              for s in range(0, len(frames), chunk)], dim=2)
            generator = torch.Generator(device="cpu").manual_seed(noise_seed(self.cfg.seed, task.clip_id))
            latents = pipe.denoise(torch.from_numpy(ref_latent.astype(np.float32))[None],
                                   torch.from_numpy(ref_clip.astype(np.float32))[None], condition, mask, pose,
                                   num_inference_steps=self.cfg.steps, guidance_scale=self.cfg.guidance,
                                   generator=generator, context_frames=self.cfg.context_frames,
                                   context_overlap=self.cfg.context_overlap)
            if not torch.isfinite(latents).all():  # a model that overflows (fp16): every rerun would too
                return task.reject("not_finite", f"clip {task.clip_id}: the generated latents are not finite "
                                   f"(model {self.model_dir}, dtype {self.dtype_spec})")
            scale = float(pipe.vae.config.scaling_factor)
            generated = decode_latents(pipe.vae, latents.float(), scale=scale, chunk_size=chunk)[0]  # (3,N,H,W)
            original = decode_latents(pipe.vae, target, scale=scale, chunk_size=chunk)[0]
            height, width = original.shape[-2:]
            if self.cfg.condition == "box":
                region = torch.from_numpy(boxes_to_masks(boxes[frames], height, width) > 0).float()[None]
            else:
                region = F.interpolate(mask[0].float(), size=(height, width), mode="nearest")  # (1,N,H,W)
            scores = pixel_metrics(generated, original, region)
            if self.metric_nets:
                reference = decode_latents(pipe.vae, torch.from_numpy(ref_latent.astype(np.float32))[None, :, None],
                                           scale=scale, chunk_size=1)[0, :, 0]
                ref_box = boxes[task.reference_frame] if task.reference_frame >= 0 else [np.nan] * 4
                scores.update(clip_metrics(self.metric_nets, generated, original, reference, boxes[frames], ref_box))
                features = set_features(self.metric_nets, generated, original, self.cfg.fvd_frames)
                if features:
                    path = f"{self.features_dir}/{task.clip_id}.npz"
                    with atomic_path(path, keep_suffix=True) as tmp:
                        np.savez(tmp, **features)
                    task.features_path = path
        task.metrics = scores
        task.frames = len(frames)
        if task.preview:
            path = f"{self.previews_dir}/{task.clip_id}.png"
            atomic_write_bytes(path, encode_png(pair_strip(original, generated)))
            task.preview_path = path
        return task


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
