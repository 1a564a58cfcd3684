"""One self-boost generation on cached latents: the clip's stage-1 inputs (fine mask, the frames with
it blacked out, pose) with another clip's character, sampled by the stage-1 model, then decoded to
uint8 frames and encoded again.

The round trip is the point: at inference, stage 2's input is a real video encoded by the VAE, so
stage 2 must be trained on the latents of the generated *frames*, not on the sampler's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from anycharv.datasets import schema
from anycharv.datasets.sample_reader import SampleView
from anycharv.datasets.stage1 import pose_frames
from anycharv.model.encoders import decode_latents, encode_frames, module_device_dtype
from anycharv.model.image_processing import resize_frames, video_to_uint8


@dataclass
class Generation:
    latents: np.ndarray  # (F,4,h,w) float32: the generated frames encoded again (what stage 2 reads)
    raw_latents: np.ndarray  # (F,4,h,w) float32: the sampler's output
    frames: np.ndarray  # (F,H,W,3) uint8: the generated frames
    reference_image: np.ndarray  # (H,W,3) uint8: the reference as the model saw it


def _to_uint8(video: torch.Tensor) -> np.ndarray:
    """(1,3,F,H,W) in [0,1] -> (F,H,W,3) uint8, rounded as inference rounds by default."""
    return video_to_uint8(video[0].permute(1, 2, 3, 0), mode="round").numpy()


def latent_scale(vae) -> float:
    return float(vae.config.scaling_factor)


@torch.no_grad()
def decode_uint8(vae, latents: np.ndarray, chunk: int) -> np.ndarray:
    """(F,4,h,w) latents -> (F,H,W,3) uint8 frames."""
    video = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32)).permute(1, 0, 2, 3)[None]
    return _to_uint8(decode_latents(vae, video, scale=latent_scale(vae), chunk_size=chunk))


@torch.no_grad()
def reference_inputs(view: SampleView, meta: dict, frame: int, vae, height: int, width: int
                     ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(latent (1,4,h,w), CLIP embedding (1,1,D), image (H,W,3) uint8) of reference ``frame`` of the
    clip ``view``, at the target's model size ``height`` x ``width``. A reference of another bucket
    is decoded, resized as inference resizes a reference image, and encoded again."""
    lh, lw = int(meta["latent_height"]), int(meta["latent_width"])
    latents = view.array(schema.REF_LATENTS, 4, frame + 1, (4, lh, lw))
    embeds = view.array(schema.REF_CLIP, 3, frame + 1, (1, None))
    image = decode_uint8(vae, latents[frame:frame + 1], chunk=1)
    if (int(meta["height"]), int(meta["width"])) == (height, width):
        latent = torch.from_numpy(latents[frame].astype(np.float32))[None]
    else:
        image = resize_frames(image, height, width)
        latent = encode_frames(vae, image, scale=latent_scale(vae), chunk_size=1, device=torch.device("cpu"))[:, :, 0]
    return latent, torch.from_numpy(embeds[frame].astype(np.float32))[None], image[0]


@torch.no_grad()
def pose_features(pose_guider, view: SampleView, meta: dict, chunk: int) -> torch.Tensor:
    """(1,C0,F,h,w) pose-guider features of the whole clip, rendered and run ``chunk`` frames at a
    time (the guider is per frame, so chunking changes nothing)."""
    device, dtype = module_device_dtype(pose_guider)
    frames = np.arange(int(meta["num_frames"]))
    out = []
    for start in range(0, len(frames), chunk):
        poses = torch.from_numpy(pose_frames(view, meta, frames[start:start + chunk]))
        out.append(pose_guider(poses[None].to(device, dtype)))
    return torch.cat(out, dim=2)


@torch.no_grad()
def generate_clip(pipe, view: SampleView, meta: dict, reference: tuple[torch.Tensor, torch.Tensor, np.ndarray], *,
                  steps: int, guidance: float, noise_seed: int, context_frames: int, context_overlap: int,
                  chunk: int) -> Generation:
    """Re-generate the clip ``view`` with ``reference`` (``reference_inputs``) as the character."""
    total, lh, lw = int(meta["num_frames"]), int(meta["latent_height"]), int(meta["latent_width"])
    masked = view.array(schema.masked_latents(0), 4, total, (4, lh, lw))[:total]
    mask = view.array(schema.mask(0), 4, total, (1, lh, lw))[:total]
    target = torch.from_numpy(masked.astype(np.float32)).permute(1, 0, 2, 3)[None]
    mask_latents = torch.from_numpy(mask.astype(np.float32)).permute(1, 0, 2, 3)[None]
    poses = pose_features(pipe.pose_guider, view, meta, chunk)
    ref_latent, embeds, _ = reference
    generator = torch.Generator(device="cpu").manual_seed(noise_seed)
    raw = pipe.denoise(ref_latent, embeds, target, mask_latents, poses, num_inference_steps=steps,
                       guidance_scale=guidance, generator=generator, context_frames=context_frames,
                       context_overlap=context_overlap)
    frames = pipe.postprocess(raw, output_type="uint8", decode_chunk_size=chunk)[0]
    again = encode_frames(pipe.vae, frames, scale=latent_scale(pipe.vae), chunk_size=chunk,
                          device=torch.device("cpu"))
    return Generation(latents=again[0].permute(1, 0, 2, 3).numpy(),
                      raw_latents=raw[0].permute(1, 0, 2, 3).float().cpu().numpy(),
                      frames=frames, reference_image=reference[2])
