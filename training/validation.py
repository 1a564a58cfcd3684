"""Validation during training: self-reconstruction of held-out clips.

Each clip is generated from its own inputs (its own character as the reference, the stage's
condition and mask) with the sampler of inference (``AnyCharVPipeline.denoise``), decoded with the
cache's VAE and compared with the decoding of the clip's cached latents: PSNR over the frame, and
inside / outside the mask. A preview strip (per clip: target frames over generated ones) goes to
``validation/step-N.png`` and TensorBoard. The VAE is loaded here only: training itself never needs it.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from anycharv.errors import InputError
from anycharv.training.config import TrainConfig, ValidationConfig
from anycharv.training.data import make_dataset, split_buckets
from anycharv.training.network import stage_batch

log = logging.getLogger("anycharv.training")


def psnr(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None) -> float | None:
    """PSNR in dB of images in [0, 1]; with ``weight`` (broadcastable, 0/1) only where it is 1."""
    err = (a.float() - b.float()).pow(2)
    if weight is not None:
        weight = weight.expand_as(err).float()
        if weight.sum() < 1:
            return None
        mse = float((err * weight).sum() / weight.sum())
    else:
        mse = float(err.mean())
    return round(10.0 * math.log10(1.0 / max(mse, 1e-10)), 3)


def pair_strip(target: torch.Tensor, generated: torch.Tensor, frames: int = 4) -> np.ndarray:
    """(3,F,H,W) pair -> uint8 (2H, min(F,frames)*W, 3): target frames over generated frames."""
    idx = np.linspace(0, target.shape[1] - 1, min(frames, target.shape[1])).round().astype(int)
    rows = [torch.cat([video[:, i] for i in idx], dim=2) for video in (target, generated)]
    image = torch.cat(rows, dim=1).permute(1, 2, 0).clamp(0, 1)
    return (image.numpy() * 255 + 0.5).astype(np.uint8)


class Validator:
    """Held-out samples read once; ``run(networks, step)`` generates and scores them."""

    def __init__(self, data_dir: str | Path, cfg: TrainConfig, vcfg: ValidationConfig, vae, device: torch.device,
                 autocast_dtype: torch.dtype | None = None):
        self.cfg, self.vcfg, self.vae, self.device = cfg, vcfg, vae, device
        self.autocast_dtype = autocast_dtype
        self.split = vcfg.split
        buckets = split_buckets(data_dir, cfg, self.split) if self._has_split(data_dir, cfg, self.split) else []
        if not buckets and self.split == "val":
            log.warning("validation: the cache has no val split for %s; validating on train clips", cfg.stage)
            self.split, buckets = "train", split_buckets(data_dir, cfg, "train")
        vcfg_data = cfg.data.model_copy(update={"num_frames": vcfg.num_frames, "buckets": None})
        short = cfg.model_copy(update={"data": vcfg_data})
        self.items: list[dict] = []
        for bucket in buckets:
            try:
                dataset = make_dataset(data_dir, short, self.split, bucket, rank=0, world_size=1, validation=True,
                                       seed=12345)
            except InputError as exc:  # e.g. every clip of the bucket shorter than the window
                log.warning("validation: bucket %s left out (%s)", bucket, exc)
                continue
            for item in dataset:
                self.items.append(item)
                if len(self.items) >= vcfg.num_clips:
                    break
            if len(self.items) >= vcfg.num_clips:
                break
        if not self.items:
            raise InputError(str(data_dir), f"no {self.split} clip to validate {cfg.stage} on", code="empty_dataset")

    @staticmethod
    def _has_split(data_dir, cfg, split) -> bool:
        try:
            return bool(split_buckets(data_dir, cfg, split))
        except InputError:
            return False

    def _pipeline(self, networks: dict):
        from anycharv.model.pipeline import AnyCharVPipeline
        from anycharv.model.scheduling import make_scheduler

        return AnyCharVPipeline(vae=self.vae, image_encoder=None, reference_unet=networks["reference_unet"],
                                denoising_unet=networks["denoising_unet"], pose_guider=networks["pose_guider"],
                                scheduler=make_scheduler(), feature_extractor=None)

    @torch.no_grad()
    def run(self, networks: dict, step: int) -> tuple[dict, np.ndarray]:
        from anycharv.model.encoders import decode_latents

        modes = {name: net.training for name, net in networks.items()}
        for net in networks.values():
            net.eval()
        pipe = self._pipeline(networks)
        pipe.set_progress_bar_config(disable=True)
        scale = float(self.vae.config.scaling_factor)
        scores: dict[str, list[float]] = {"psnr": [], "psnr_mask": [], "psnr_outside": []}
        strips = []
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                    else nullcontext())
        try:
            for i, item in enumerate(self.items):
                batch = stage_batch(torch.utils.data.default_collate([item]), self.cfg.stage).to(self.device)
                with autocast:
                    pose = networks["pose_guider"](batch.pose)
                    latents = pipe.denoise(batch.ref_latent, batch.ref_clip, batch.condition, batch.mask, pose,
                                           num_inference_steps=self.vcfg.steps, guidance_scale=self.vcfg.guidance,
                                           generator=torch.Generator().manual_seed(1000 + i),
                                           context_frames=max(batch.target.shape[2], 1), context_overlap=0)
                generated = decode_latents(self.vae, latents.float(), scale=scale)[0]
                target = decode_latents(self.vae, batch.target.float(), scale=scale)[0]
                mask = torch.nn.functional.interpolate(batch.mask[0].float().cpu(), size=target.shape[-2:],
                                                       mode="nearest")  # (1,F,H,W)
                scores["psnr"].append(psnr(generated, target))
                scores["psnr_mask"].append(psnr(generated, target, mask))
                scores["psnr_outside"].append(psnr(generated, target, 1 - mask))
                strips.append(pair_strip(target, generated))
        finally:
            for name, net in networks.items():
                net.train(modes[name])
        width = max(s.shape[1] for s in strips)
        preview = np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0))) for s in strips], axis=0)
        record = {"step": int(step), "split": self.split, "clips": len(self.items)}
        for key, values in scores.items():
            values = [v for v in values if v is not None]
            record[key] = round(float(np.mean(values)), 3) if values else None
        return record, preview
