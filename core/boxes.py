"""Boxes to masks, in core because both sides of the pipeline draw the same region.

Preprocessing limits fine masks to the person's box, inference marks the person to replace with
a box mask, and the model's paste-back composites inside that box. If they rasterised a box
differently, one pixel row would disagree between the mask the model sees and the region that is
pasted back, so all three use this function.
"""

from __future__ import annotations

import numpy as np

from anycharv.errors import InputError

__all__ = ["boxes_to_masks", "fill_missing_boxes", "pad_boxes"]


def boxes_to_masks(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(F,4) x0,y0,x1,y1 boxes in pixels -> (F,H,W) uint8 masks, 255 on pixels the box covers.

    A pixel (x, y) is inside when its extent [x, x+1) overlaps the box, so fractional box edges
    round outwards (the region never loses a pixel the box touches). NaN rows give empty masks.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError("boxes", f"expected shape (F,4) as x0,y0,x1,y1, got {boxes.shape}")
    masks = np.zeros((len(boxes), height, width), dtype=np.uint8)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        if not np.all(np.isfinite([x0, y0, x1, y1])):
            continue
        c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        c1, r1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
        if c1 > c0 and r1 > r0:
            masks[i, r0:r1, c0:c1] = 255
    return masks


def pad_boxes(boxes: np.ndarray, pad: float, width: int, height: int) -> np.ndarray:
    """Enlarge xyxy boxes by ``pad`` x their size on every side, clipped to the frame."""
    b = np.asarray(boxes, np.float32).copy()
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    b[:, 0] -= pad * bw
    b[:, 2] += pad * bw
    b[:, 1] -= pad * bh
    b[:, 3] += pad * bh
    return np.clip(b, 0, [width, height, width, height]).astype(np.float32)


def fill_missing_boxes(boxes: np.ndarray, where: str) -> np.ndarray:
    """NaN rows (frames where the tracker lost the character) interpolated from the known ones."""
    boxes = np.asarray(boxes, np.float64)
    known = np.flatnonzero(np.isfinite(boxes).all(axis=1))
    if not len(known):
        raise InputError(where, "the character's box is missing in every frame", code="no_box")
    grid = np.arange(len(boxes))
    return np.stack([np.interp(grid, known, boxes[known, k]) for k in range(4)], axis=1).astype(np.float32)
