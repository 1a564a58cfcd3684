"""One clip's images at its bucket's size, before encoding: frames, mask variants, the frames with
each mask blacked out, box masks and reference frames with the background zeroed.

The crop is the largest window of the bucket's aspect ratio inside the frame, centred on the union
of the character's boxes (clamped to the frame), then resized to the bucket; boxes and keypoints
follow. Augmentations are drawn from a generator seeded by the seed and the clip id, so a rerun
gives the same masks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from anycharv.boxes import boxes_to_masks, fill_missing_boxes, pad_boxes
from anycharv.datasets.augment import KINDS, augment
from anycharv.errors import InputError
from anycharv.latent_cache.config import CacheConfig
from anycharv.latent_cache.plan import CacheTask


@dataclass
class ClipPixels:
    frames: np.ndarray  # (F,H,W,3) uint8
    variant_masks: np.ndarray  # (V+1,F,H,W) bool; 0 = the fine mask
    variant_kinds: list[str]
    box_masks: np.ndarray  # (F,H,W) bool
    boxes: np.ndarray  # (F,4) float32 padded, model pixels
    keypoints: np.ndarray  # (F,K,3) float32, model pixels
    reference_frames: list[int]  # indices into the clip
    frame_indices: list[int]  # source frame numbers
    crop: list[int]  # x0, y0, x1, y1 in processing pixels

    def masked_frames(self, k: int) -> np.ndarray:
        return np.where(self.variant_masks[k][..., None], 0, self.frames).astype(np.uint8)

    def references(self) -> np.ndarray:
        idx = self.reference_frames
        return np.where(self.variant_masks[0][idx][..., None], self.frames[idx], 0).astype(np.uint8)


def clip_rng(seed: int, clip_id: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{clip_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def crop_window(boxes: np.ndarray, width: int, height: int, aspect: float) -> tuple[int, int, int, int]:
    """Largest (x0, y0, x1, y1) window of ``aspect`` (= w/h) inside the frame, centred on the boxes."""
    if width / height > aspect:
        ch, cw = height, max(1, min(width, int(round(height * aspect))))
    else:
        cw, ch = width, max(1, min(height, int(round(width / aspect))))
    cx = (np.nanmin(boxes[:, 0]) + np.nanmax(boxes[:, 2])) / 2
    cy = (np.nanmin(boxes[:, 1]) + np.nanmax(boxes[:, 3])) / 2
    x0 = int(np.clip(round(cx - cw / 2), 0, width - cw))
    y0 = int(np.clip(round(cy - ch / 2), 0, height - ch))
    return x0, y0, x0 + cw, y0 + ch


def _resize(images: np.ndarray, width: int, height: int, nearest: bool) -> np.ndarray:
    import cv2

    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    if not nearest and width * height > images.shape[1] * images.shape[2]:
        interp = cv2.INTER_CUBIC
    src = images.astype(np.uint8)
    return np.stack([cv2.resize(im, (width, height), interpolation=interp) for im in src])


def reference_indices(num_frames: int, count: int) -> list[int]:
    """``count`` frames spread evenly over the clip (fewer when the clip is shorter)."""
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, min(count, num_frames))})


def build_clip_pixels(task: CacheTask, frames: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray,
                      masks: np.ndarray, cfg: CacheConfig) -> ClipPixels:
    """``frames``/``masks`` at processing size (T,h,w[,3]); boxes (T,4) and keypoints (T,K,3) in its pixels."""
    where = f"clip {task.clip_id}"
    count = len(frames)
    if not (len(boxes) == len(keypoints) == len(masks) == count):
        raise InputError(where, f"annotation lengths differ: {count} frames, {len(boxes)} boxes, "
                                f"{len(keypoints)} keypoints, {len(masks)} masks", code="bad_annotations")
    if cfg.max_frames is not None and count > cfg.max_frames:
        frames, boxes, keypoints, masks = (a[: cfg.max_frames] for a in (frames, boxes, keypoints, masks))
        count = cfg.max_frames
    boxes = fill_missing_boxes(boxes, where)
    height, width = task.bucket_height, task.bucket_width
    x0, y0, x1, y1 = crop_window(boxes, task.width, task.height, width / height)
    sx, sy = width / (x1 - x0), height / (y1 - y0)
    frames = _resize(frames[:, y0:y1, x0:x1], width, height, nearest=False)
    fine = _resize(masks[:, y0:y1, x0:x1].astype(np.uint8), width, height, nearest=True) > 0
    shift = np.array([x0, y0, x0, y0], np.float32)
    scale = np.array([sx, sy, sx, sy], np.float32)
    model_boxes = np.clip((boxes - shift) * scale, 0, [width, height, width, height]).astype(np.float32)
    kp = np.asarray(keypoints, np.float32).copy()
    kp[..., 0] = (kp[..., 0] - x0) * sx
    kp[..., 1] = (kp[..., 1] - y0) * sy
    padded = pad_boxes(model_boxes, cfg.box_pad, width, height)
    rng = clip_rng(cfg.seed, task.clip_id)
    kinds = ["original"] + [KINDS[k % len(KINDS)] for k in range(cfg.mask_variants)]
    variants = [fine] + [augment(fine, kind, rng) for kind in kinds[1:]]
    return ClipPixels(
        frames=frames, variant_masks=np.stack(variants), variant_kinds=kinds,
        box_masks=boxes_to_masks(padded, height, width) > 0, boxes=padded, keypoints=kp,
        reference_frames=reference_indices(count, cfg.num_references),
        frame_indices=list(range(task.start_frame, task.start_frame + count)), crop=[x0, y0, x1, y1])
