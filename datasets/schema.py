"""The latent-cache sample: member names, array layouts and the schema version (the data contract
between the cache job, the self-boost job and the training readers).

A shard is a plain tar (WebDataset layout): each sample's members are ``<clip_id>.<field>``, the
clip id has no dots, the field's extension says how to decode it (``.npy`` without pickle,
``.json``, ``.png``). Sizes: ``F`` frames, ``h, w`` latent size (model size / 8), ``V`` augmented
mask variants, ``R`` candidate references, ``K`` keypoints, ``D`` CLIP embedding width.

==========================  ==================================================================
stage-1 field               content
==========================  ==================================================================
``meta.json``               see ``META_KEYS`` (``crop`` is x0, y0, x1, y1 in the preprocessing
                            output's pixels, ``prep_width`` x ``prep_height``)
``latents.npy``             (F,4,h,w) VAE posterior mean x scaling factor (the training target)
``latents_std.npy``         (F,4,h,w) posterior std x scaling factor: ``latents + std * eps``
                            samples the posterior
``masked_latents_<k>.npy``  (F,4,h,w) latents of the frames with mask variant ``k`` set to black
                            (``k = 0``: the fine mask; ``1..V``: augmented, kinds in meta)
``mask_<k>.npy``            (F,1,h,w) uint8 0/1, mask variant ``k`` at latent size (nearest)
``box_mask.npy``            (F,1,h,w) uint8 0/1, the padded box at latent size (stage 2 and inference)
``boxes.npy``               (F,4) float32 padded xyxy box in model pixels: the pixel-size box mask
                            is ``anycharv.boxes.boxes_to_masks(boxes, H, W)``
``keypoints.npy``           (F,K,3) float32 x, y, score in model pixels (layout in meta)
``ref_latents.npy``         (R,4,h,w) latents of reference frames of the clip, background zeroed
``ref_clip.npy``            (R,1,D) float32 CLIP image embeddings of the same references
==========================  ==================================================================

Latent arrays are float16 or float32 (``meta.latent_dtype``). Self-boost samples (the stage-1
model's re-generation of a clip with another clip's character) carry ``meta.json`` (schema
version, clip id, the reference's clip id, the model, the seed) and ``generated_latents.npy``
(F,4,h,w) under the same clip id, so the two sets join by key.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

META = "meta.json"
LATENTS = "latents.npy"
LATENTS_STD = "latents_std.npy"
BOX_MASK = "box_mask.npy"
BOXES = "boxes.npy"
KEYPOINTS = "keypoints.npy"
REF_LATENTS = "ref_latents.npy"
REF_CLIP = "ref_clip.npy"
GENERATED_LATENTS = "generated_latents.npy"

META_KEYS = (
    "schema_version", "clip_id", "source", "source_digest", "frame_indices", "fps", "num_frames",
    "height", "width", "latent_height", "latent_width", "prep_width", "prep_height", "bucket", "split", "crop",
    "keypoint_layout", "mask_variants", "reference_frames", "encoders", "latent_dtype",
)
SPLITS = ("train", "val")


def masked_latents(k: int) -> str:
    return f"masked_latents_{k}.npy"


def mask(k: int) -> str:
    return f"mask_{k}.npy"


def stage1_fields(num_variants: int) -> list[str]:
    """Every member a stage-1 sample with ``num_variants`` augmented masks must have."""
    fields = [META, LATENTS, LATENTS_STD, BOX_MASK, BOXES, KEYPOINTS, REF_LATENTS, REF_CLIP]
    for k in range(num_variants + 1):
        fields += [masked_latents(k), mask(k)]
    return sorted(fields)


def selfboost_fields() -> list[str]:
    return sorted([META, GENERATED_LATENTS])


def bucket_name(height: int, width: int) -> str:
    """Folder name of a resolution bucket: ``<H>x<W>`` in model pixels."""
    return f"{int(height)}x{int(width)}"


def shard_name(set_name: str, bucket: str, split: str, number: int) -> str:
    """Shard path relative to ``shards/``: ``<set>/<bucket>/<split>-<000000>.tar``."""
    return f"{set_name}/{bucket}/{split}-{int(number):06d}.tar"
