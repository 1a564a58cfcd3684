"""Reference character: cut the character out of its photo and place it on the model's canvas.

The model was trained on references whose background is zeroed, and it is sensitive to the
character's proportions, so the character is segmented, cropped to its extent, and scaled to fit
the W x H canvas without distortion (letterboxed on a plain background).

Segmentation is injected (``segment`` callable), so this module stays free of preprocessing
imports; the CLI passes the isnet foreground backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from anycharv.errors import InputError

__all__ = ["Placement", "ReferenceInputs", "load_image", "parse_background", "place_on_canvas",
           "prepare_reference"]

Segmenter = Callable[[np.ndarray], np.ndarray]
"""RGB uint8 (H,W,3) -> foreground mask (H,W), uint8 0..255 or float 0..1."""


@dataclass(frozen=True)
class Placement:
    """Where the cropped character landed on the canvas: top-left (x, y), size (w, h), and scale."""

    x: int
    y: int
    w: int
    h: int
    scale: float
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 of the character in the source image


@dataclass
class ReferenceInputs:
    image: np.ndarray  # (H,W,3) uint8, the model's reference input
    mask: np.ndarray  # (H,W) uint8, the character's mask on the canvas
    placement: Placement
    source_size: tuple[int, int]  # (W, H) of the photo
    segmented: bool


def load_image(path: str | os.PathLike, name: str = "ref") -> tuple[np.ndarray, np.ndarray | None]:
    """Read an image file -> (RGB uint8 (H,W,3), alpha (H,W) uint8 or None when fully opaque)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            has_alpha = img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info)
            rgba = img.convert("RGBA") if has_alpha else None
            rgb = np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise InputError(f"{name} {path}", "file not found", code="missing") from None
    except IsADirectoryError:
        raise InputError(f"{name} {path}", "is a folder, not an image", code="unreadable") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, ImportError) as exc:
        # ImportError: ultralytics patches Image.open to retry unknown files with an optional HEIF
        # plugin, which fails when that plugin is absent - still "not an image" for us.
        raise InputError(f"{name} {path}", f"not a readable image ({exc.__class__.__name__})",
                         code="unreadable") from None
    alpha = None
    if rgba is not None:
        a = np.asarray(rgba)[..., 3]
        if a.min() < 255:
            alpha = np.ascontiguousarray(a)
    if rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise InputError(f"{name} {path}", f"image is too small ({rgb.shape[1]}x{rgb.shape[0]})", code="too_small")
    return np.ascontiguousarray(rgb), alpha


def parse_background(spec: str | tuple[int, int, int] | None) -> tuple[int, int, int]:
    """"black", "white", "gray", "R,G,B" or a tuple -> an RGB tuple (default black)."""
    if spec is None:
        return (0, 0, 0)
    if isinstance(spec, tuple):
        values = spec
    else:
        named = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128), "grey": (128, 128, 128)}
        if spec.lower() in named:
            return named[spec.lower()]
        try:
            values = tuple(int(v) for v in spec.split(","))
        except ValueError:
            values = ()
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise InputError("ref background", f"expected black, white, gray or R,G,B in 0..255, got {spec!r}")
    return tuple(int(v) for v in values)


def _as_uint8_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.shape != shape:
        raise InputError("ref mask", f"mask size {mask.shape} differs from the image size {shape}")
    if mask.dtype == np.uint8:
        return mask
    if mask.dtype == bool:
        return mask.astype(np.uint8) * 255
    return np.clip(np.rint(mask.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def place_on_canvas(image: np.ndarray, mask: np.ndarray | None, width: int, height: int, *,
                    background: tuple[int, int, int] = (0, 0, 0), margin: float = 0.05,
                    threshold: int = 128) -> tuple[np.ndarray, np.ndarray, Placement]:
    """Crop ``image`` to the extent of ``mask`` and fit it into a ``width`` x ``height`` canvas.

    The crop is scaled by one factor for both axes (aspect ratio kept), as large as fits inside the
    canvas minus ``margin`` (fraction of each side), and centred. With a mask, pixels are blended
    over ``background`` by the (soft) mask; without one, the whole image is placed as it is.
    Returns (canvas uint8 (H,W,3), canvas mask uint8 (H,W), Placement).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError("ref", f"expected an RGB uint8 image (H,W,3), got {image.dtype} {image.shape}")
    if not 0.0 <= margin < 0.5:
        raise InputError("ref margin", f"margin must be in [0, 0.5), got {margin}")
    src_h, src_w = image.shape[:2]
    if mask is None:
        mask = np.full((src_h, src_w), 255, dtype=np.uint8)
    mask = _as_uint8_mask(mask, (src_h, src_w))

    rows = np.flatnonzero((mask >= threshold).any(axis=1))
    cols = np.flatnonzero((mask >= threshold).any(axis=0))
    if rows.size == 0:
        raise InputError("ref", "no character found: the foreground mask is empty", code="no_character")
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    crop = image[y0:y1, x0:x1]
    crop_mask = mask[y0:y1, x0:x1]
    ch, cw = crop.shape[:2]

    avail_w, avail_h = width * (1.0 - 2 * margin), height * (1.0 - 2 * margin)
    scale = min(avail_w / cw, avail_h / ch)
    new_w = min(width, max(1, int(round(cw * scale))))
    new_h = min(height, max(1, int(round(ch * scale))))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
    crop = cv2.resize(crop, (new_w, new_h), interpolation=interp)
    crop_mask = cv2.resize(crop_mask, (new_w, new_h), interpolation=cv2.INTER_LINEAR)

    alpha = crop_mask.astype(np.float32)[..., None] / 255.0
    bg = np.asarray(background, dtype=np.float32)
    blended = np.clip(np.rint(alpha * crop.astype(np.float32) + (1.0 - alpha) * bg), 0, 255).astype(np.uint8)

    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = np.asarray(background, dtype=np.uint8)
    canvas_mask = np.zeros((height, width), dtype=np.uint8)
    left, top = (width - new_w) // 2, (height - new_h) // 2
    canvas[top:top + new_h, left:left + new_w] = blended
    canvas_mask[top:top + new_h, left:left + new_w] = crop_mask
    return canvas, canvas_mask, Placement(left, top, new_w, new_h, float(scale), (x0, y0, x1, y1))


def prepare_reference(image: str | os.PathLike | np.ndarray, width: int, height: int, *,
                      segment: Segmenter | None = None, background: str | tuple[int, int, int] | None = None,
                      margin: float = 0.05) -> ReferenceInputs:
    """Reference photo (path or RGB uint8 array) -> the model's reference input of size W x H.

    The character mask comes from the image's own alpha channel when it has one, else from
    ``segment`` (e.g. the isnet foreground backend); with neither, the whole photo is placed.
    """
    alpha = None
    if isinstance(image, (str, os.PathLike)):
        rgb, alpha = load_image(image)
    else:
        rgb = np.asarray(image)
    mask = alpha
    if mask is None and segment is not None:
        mask = segment(rgb)
    canvas, canvas_mask, placement = place_on_canvas(
        rgb, mask, width, height, background=parse_background(background), margin=margin)
    return ReferenceInputs(canvas, canvas_mask, placement, (rgb.shape[1], rgb.shape[0]), mask is not None)
