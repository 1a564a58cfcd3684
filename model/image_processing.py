"""Turn user inputs (PIL images or uint8 arrays) into the tensors the networks take, and back.

Everything is validated here, once, so that the pipeline can trust shapes and dtypes: a bad input
raises ``InputError`` naming the argument. Frames stay uint8 on the host until a chunk is needed,
so memory does not scale with video length in float32.

The official pipeline's conventions are reproduced exactly: images resized to (H, W) with PIL
Lanczos (identity when already that size), pixels scaled as ``x / 255`` in float32 (then to
[-1, 1] for the VAE, kept in [0, 1] for the pose guider), the CLIP input resized to the CLIP crop
size with PIL bicubic before the ``CLIPImageProcessor``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from anycharv.errors import InputError

__all__ = [
    "MASK_RESIZE_MODES", "UINT8_MODES", "as_rgb_image", "as_rgb_frames", "as_masks",
    "resize_frames", "pixels_to_tensor", "clip_pixel_values", "masks_to_latent", "video_to_uint8",
]

MASK_RESIZE_MODES = ("nearest", "area")
UINT8_MODES = ("truncate", "round")
_MASK_MODES = ("L", "1")


def _rgb_array(img, name: str) -> np.ndarray:
    """One image -> (H,W,3) uint8; PIL must be mode RGB, arrays uint8 (H,W,3)."""
    if isinstance(img, PIL.Image.Image):
        if img.mode != "RGB":
            raise InputError(name, f"expected an RGB image, got PIL mode {img.mode!r} (convert it first)",
                             "bad_image_mode")
        arr = np.asarray(img)
    elif isinstance(img, np.ndarray):
        arr = img
    else:
        raise InputError(name, f"expected a PIL image or a uint8 numpy array, got {type(img).__name__}",
                         "bad_type")
    if arr.dtype != np.uint8:
        raise InputError(name, f"expected dtype uint8, got {arr.dtype}", "bad_dtype")
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise InputError(name, f"expected shape (H,W,3), got {arr.shape}", "bad_shape")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(name, f"empty image of shape {arr.shape}", "empty")
    return arr


def as_rgb_image(image, name: str = "reference_image") -> np.ndarray:
    """Reference image (PIL RGB or uint8 (H,W,3)) -> uint8 (H,W,3)."""
    return np.ascontiguousarray(_rgb_array(image, name))


def _frame_list(frames, name: str, frame_ndim: int) -> list:
    if isinstance(frames, np.ndarray):
        if frames.ndim == frame_ndim + 1:
            frames = list(frames)
        else:
            raise InputError(name, f"expected a {frame_ndim + 1}-d array of frames, got shape {frames.shape}",
                             "bad_shape")
    elif isinstance(frames, (PIL.Image.Image, str, bytes)) or not isinstance(frames, Sequence):
        raise InputError(name, f"expected a list of frames or a stacked uint8 array, got {type(frames).__name__}",
                         "bad_type")
    if len(frames) == 0:
        raise InputError(name, "no frames", "empty")
    return list(frames)


def _stack(arrs: list[np.ndarray], name: str) -> np.ndarray:
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        raise InputError(name, f"frames differ in size: {sorted(shapes)}", "inconsistent_size")
    return np.stack(arrs)


def as_rgb_frames(frames, name: str) -> np.ndarray:
    """Frames (list of PIL RGB / uint8 (H,W,3), or uint8 (F,H,W,3)) -> uint8 (F,H,W,3)."""
    items = _frame_list(frames, name, 3)
    return _stack([_rgb_array(f, f"{name}[{i}]") for i, f in enumerate(items)], name)


def as_masks(masks, name: str = "masks") -> np.ndarray:
    """Masks (list of PIL 'L'/'1' / uint8 or bool (H,W), or (F,H,W)) -> uint8 (F,H,W), 255 = character."""
    items = _frame_list(masks, name, 2)
    out = []
    for i, m in enumerate(items):
        label = f"{name}[{i}]"
        if isinstance(m, PIL.Image.Image):
            if m.mode not in _MASK_MODES:
                raise InputError(label, f"expected a PIL mask of mode 'L' or '1', got {m.mode!r}", "bad_image_mode")
            m = np.asarray(m.convert("L"))
        elif not isinstance(m, np.ndarray):
            raise InputError(label, f"expected a PIL image or numpy array, got {type(m).__name__}", "bad_type")
        if m.dtype == np.bool_:
            m = m.astype(np.uint8) * 255
        if m.dtype != np.uint8:
            raise InputError(label, f"expected dtype uint8 or bool, got {m.dtype}", "bad_dtype")
        if m.ndim != 2:
            raise InputError(label, f"expected shape (H,W), got {m.shape}", "bad_shape")
        if m.size == 0:
            raise InputError(label, f"empty mask of shape {m.shape}", "empty")
        out.append(m)
    return _stack(out, name)


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (F,H,W,3) -> (F,height,width,3) with PIL Lanczos; a no-op when the size already matches."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([
        np.asarray(PIL.Image.fromarray(f).resize((width, height), resample=PIL.Image.LANCZOS)) for f in frames
    ])


def pixels_to_tensor(frames: np.ndarray, *, signed: bool) -> torch.Tensor:
    """uint8 (N,H,W,3) -> float32 (N,3,H,W): ``x/255`` in [0,1], or ``2*(x/255)-1`` when ``signed``."""
    x = torch.from_numpy(np.ascontiguousarray(frames).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    return x * 2.0 - 1.0 if signed else x


def clip_pixel_values(image: np.ndarray, processor) -> torch.Tensor:
    """Reference uint8 (H,W,3) -> CLIP input (1,3,S,S): bicubic resize to the crop size, then ``processor``."""
    crop = getattr(processor, "crop_size", None) or {"height": 224, "width": 224}
    size = (int(crop["width"]), int(crop["height"]))
    resized = PIL.Image.fromarray(image).resize(size, resample=PIL.Image.BICUBIC)
    return processor.preprocess(resized, return_tensors="pt").pixel_values


def masks_to_latent(masks: np.ndarray, height: int, width: int, mode: str = "nearest") -> torch.Tensor:
    """uint8 (F,H',W') -> float32 (1,1,F,height,width) in [0,1] (value/255, never thresholded).

    ``nearest`` (official): samples one pixel per latent cell straight from the mask's own size, so
    box edges snap by position and thin regions can vanish. ``area``: each latent cell gets the
    fraction of its pixels inside the mask (coverage), which keeps every box that touches a cell.
    """
    if mode not in MASK_RESIZE_MODES:
        raise InputError("mask_resize", f"expected one of {MASK_RESIZE_MODES}, got {mode!r}")
    m = torch.from_numpy(np.ascontiguousarray(masks).astype(np.float32) / 255.0)[:, None]
    m = F.interpolate(m, size=(height, width), mode=mode)
    return m[:, 0][None, None]


def video_to_uint8(video: torch.Tensor, mode: str = "truncate") -> torch.Tensor:
    """Float video in [0,1] -> uint8 of the same layout; ``truncate`` as the official script, or ``round``."""
    if mode not in UINT8_MODES:
        raise InputError("uint8_conversion", f"expected one of {UINT8_MODES}, got {mode!r}")
    scaled = video.float().clamp(0, 1) * 255
    if mode == "round":
        scaled = scaled.round()
    return scaled.to(torch.uint8)
