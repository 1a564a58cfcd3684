"""Paste-back: put the generated person into the original frames and leave everything else untouched.

The model regenerates whole frames at its own (smaller) size, so the background it returns is a
lossy re-rendering of the source. Pasting back only the region the mask marked keeps the scene
bit-identical to the source outside that region; a feathered alpha ramp inside the region hides
the seam.
"""

from __future__ import annotations

import cv2
import numpy as np

from anycharv.boxes import boxes_to_masks
from anycharv.errors import InputError

__all__ = ["feather_alpha", "resize_frames", "composite"]


def feather_alpha(masks: np.ndarray, feather_px: float) -> np.ndarray:
    """(F,H,W) masks -> float32 alpha in [0,1]: 0 wherever the mask is 0, ramping to 1 over
    ``feather_px`` pixels inward from the region's border (Euclidean distance to the outside).

    The ramp lies inside the region, so the alpha is exactly 0 outside it.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise InputError("masks", f"expected shape (F,H,W), got {masks.shape}")
    inside = masks > 0
    if feather_px <= 0:
        return inside.astype(np.float32)
    alpha = np.empty(masks.shape, dtype=np.float32)
    for i, region in enumerate(inside):
        # Distance to the nearest zero pixel; the frame border does not count as outside, so a
        # region cut by the frame edge gets no ramp there (there is no seam to hide).
        dist = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        alpha[i] = np.minimum(dist / float(feather_px), 1.0)
    return alpha


def resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize (F,h,w,3) frames to (F,height,width,3), keeping the dtype (area filter when shrinking)."""
    frames = np.asarray(frames)
    if frames.shape[1:3] == (height, width):
        return frames
    shrink = width * height < frames.shape[1] * frames.shape[2]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    out = np.empty((len(frames), height, width, frames.shape[3]), dtype=frames.dtype)
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(frame, (width, height), interpolation=interp)
    return out


def _to_uint8(frames: np.ndarray, name: str) -> np.ndarray:
    if frames.dtype == np.uint8:
        return frames
    if np.issubdtype(frames.dtype, np.floating):
        # Model output convention: floats in [0,1].
        return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)
    raise InputError(name, f"expected uint8 or float frames in [0,1], got dtype {frames.dtype}")


def composite(original: np.ndarray, generated: np.ndarray, region: np.ndarray,
              feather_px: float = 8.0) -> np.ndarray:
    """Paste ``generated`` into ``original`` inside ``region``; returns uint8 (F,H,W,3).

    original: (F,H,W,3) uint8 source frames. generated: (F,h,w,3) uint8, or float in [0,1]; resized
    to (H,W) when its size differs (the model's canvas is the whole source frame, rescaled).
    region: (F,4) boxes x0,y0,x1,y1 in source pixels, or (F,H,W) masks (non-zero = region).
    Pixels outside the region are bit-identical to ``original``; pixels deeper than ``feather_px``
    inside it are exactly ``generated``.
    """
    original = np.asarray(original)
    generated = np.asarray(generated)
    region = np.asarray(region)
    if original.ndim != 4 or original.shape[3] != 3 or original.dtype != np.uint8:
        raise InputError("original", f"expected uint8 frames (F,H,W,3), got {original.dtype} {original.shape}")
    if generated.ndim != 4 or generated.shape[3] != 3:
        raise InputError("generated", f"expected frames (F,H,W,3), got {generated.shape}")
    n, height, width = original.shape[:3]
    if len(generated) != n:
        raise InputError("generated", f"{len(generated)} frames but the original video has {n}")
    if len(region) != n:
        raise InputError("region", f"{len(region)} boxes/masks but the original video has {n} frames")

    if region.ndim == 2:
        if region.shape[1] != 4:
            raise InputError("region", f"boxes must be (F,4) x0,y0,x1,y1, got shape {region.shape}")
    elif region.ndim == 3:
        if region.shape[1:] != (height, width):
            raise InputError("region", f"masks of size {region.shape[1:]} but frames are {(height, width)}")
    else:
        raise InputError("region", f"expected (F,4) boxes or (F,H,W) masks, got shape {region.shape}")

    generated = _to_uint8(generated, "generated")
    out = np.empty_like(original)
    for i in range(n):  # per frame: a whole-video float copy would not fit for long clips
        gen = resize_frames(generated[i:i + 1], width, height)[0]
        mask = boxes_to_masks(region[i:i + 1], height, width) if region.ndim == 2 else region[i:i + 1]
        alpha = feather_alpha(mask, feather_px)[0][..., None]
        blended = alpha * gen.astype(np.float32) + (1.0 - alpha) * original[i].astype(np.float32)
        blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        # np.where keeps the outside exact whatever the blend arithmetic does.
        out[i] = np.where(alpha > 0, blended, original[i])
    return out
