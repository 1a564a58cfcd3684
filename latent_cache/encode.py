"""Encode clips' images with the frozen VAE and CLIP image encoder into stage-1 sample members.

Images of every clip in a batch go through the VAE together, ``vae_chunk`` at a time (the VAE is
per image, so batching across clips changes nothing but speed); only uint8 pixels and latents are
held, never a whole batch as float pixels.
"""

from __future__ import annotations

import numpy as np
import torch

from anycharv.datasets import schema
from anycharv.datasets.codec import encode_json, encode_npy
from anycharv.latent_cache.clip_pixels import ClipPixels
from anycharv.latent_cache.plan import CacheTask
from anycharv.model.encoders import OFFICIAL_LATENT_SCALE, clip_image_embeds, module_device_dtype
from anycharv.model.image_processing import clip_pixel_values, masks_to_latent, pixels_to_tensor


@torch.no_grad()
def vae_posterior(vae, images: list[np.ndarray], chunk: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each (N,H,W,3) uint8 array: (mean, std) of the posterior x the scaling factor, float32
    (N,4,H/8,W/8) each. Arrays of one frame size go through the VAE together, ``chunk`` frames at a
    time (a batch of clips may hold several buckets)."""
    device, dtype = module_device_dtype(vae)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, arr in enumerate(images):
        by_size.setdefault(arr.shape[1:3], []).append(i)
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(images)
    for members in by_size.values():
        flat = np.concatenate([images[i] for i in members]) if len(members) > 1 else images[members[0]]
        means, stds = [], []
        for start in range(0, len(flat), chunk):
            x = pixels_to_tensor(flat[start:start + chunk], signed=True).to(device, dtype)
            dist = vae.encode(x).latent_dist
            means.append((dist.mean * OFFICIAL_LATENT_SCALE).float().cpu())
            stds.append((dist.std * OFFICIAL_LATENT_SCALE).float().cpu())
        mean, std = torch.cat(means).numpy(), torch.cat(stds).numpy()
        at = 0
        for i in members:
            out[i] = (mean[at:at + len(images[i])], std[at:at + len(images[i])])
            at += len(images[i])
    return out


@torch.no_grad()
def clip_embeddings(image_encoder, processor, images: np.ndarray) -> np.ndarray:
    """(R,H,W,3) uint8 -> (R,1,D) float32 projected CLIP image embeddings, preprocessed as the pipeline does."""
    pixels = torch.cat([clip_pixel_values(im, processor) for im in images])
    return clip_image_embeds(image_encoder, pixels).float().cpu().numpy()


def latent_masks(masks: np.ndarray, latent_height: int, latent_width: int) -> np.ndarray:
    """(F,H,W) bool -> (F,1,h,w) uint8 0/1, nearest (as the model resizes masks)."""
    lat = masks_to_latent(masks.astype(np.uint8) * 255, latent_height, latent_width, mode="nearest")
    return (lat[0, 0] > 0.5).numpy().astype(np.uint8)[:, None]


def encode_clips(items: list[tuple[CacheTask, ClipPixels]], vae, image_encoder, processor, *, chunk: int,
                 latent_dtype: str) -> list[dict[str, bytes]]:
    """Members ({field: bytes}) of the stage-1 sample of each (task, pixels)."""
    images, references = [], []
    for _, px in items:
        references.append(px.references())
        images.append(px.frames)
        images.extend(px.masked_frames(k) for k in range(len(px.variant_kinds)))
        images.append(references[-1])
    encoded = iter(vae_posterior(vae, images, chunk))
    dtype = np.dtype(latent_dtype)
    samples = []
    for (task, px), ref_pixels in zip(items, references):
        frames_mean, frames_std = next(encoded)
        masked = [next(encoded)[0] for _ in px.variant_kinds]
        refs = next(encoded)[0]
        height, width = px.frames.shape[1:3]
        lh, lw = frames_mean.shape[-2:]
        members = {
            schema.LATENTS: encode_npy(frames_mean.astype(dtype)),
            schema.LATENTS_STD: encode_npy(frames_std.astype(dtype)),
            schema.BOX_MASK: encode_npy(latent_masks(px.box_masks, lh, lw)),
            schema.BOXES: encode_npy(px.boxes.astype(np.float32)),
            schema.KEYPOINTS: encode_npy(px.keypoints.astype(np.float32)),
            schema.REF_LATENTS: encode_npy(refs.astype(dtype)),
            schema.REF_CLIP: encode_npy(clip_embeddings(image_encoder, processor, ref_pixels)),
        }
        for k, lat in enumerate(masked):
            members[schema.masked_latents(k)] = encode_npy(lat.astype(dtype))
            members[schema.mask(k)] = encode_npy(latent_masks(px.variant_masks[k], lh, lw))
        members[schema.META] = encode_json({
            "schema_version": schema.SCHEMA_VERSION, "clip_id": task.clip_id, "source": task.source,
            "source_digest": task.source_digest, "frame_indices": px.frame_indices, "fps": task.fps,
            "num_frames": len(px.frames), "height": int(height), "width": int(width), "latent_height": int(lh),
            "latent_width": int(lw), "prep_width": task.width, "prep_height": task.height,
            "bucket": task.bucket, "split": task.split, "crop": px.crop,
            "keypoint_layout": task.keypoint_layout, "mask_variants": [{"kind": k} for k in px.variant_kinds],
            "reference_frames": px.reference_frames, "encoders": task.encoders, "latent_dtype": latent_dtype,
        })
        if sorted(members) != schema.stage1_fields(len(px.variant_kinds) - 1):
            raise RuntimeError(f"clip {task.clip_id}: sample members {sorted(members)} do not follow the schema")
        samples.append(members)
    return samples
