"""Fine-mask augmentations for stage-1 training, so the model does not learn the exact silhouette
from the mask (at inference it only gets a box):

- ``jitter_contour``: the mask grown by a distance that varies smoothly along its contour; it only
  ever grows, so the whole character stays masked;
- ``curved_box``: the mask's bounding box with each edge bent into a smooth random curve (in or out
  by at most ``amplitude`` of the box side), so the box's core is always covered; united with the
  mask itself, so an edge bent inwards never uncovers part of the character (the stage-1 input
  would then show pixels of the person it has to generate).

Both take (F,H,W) masks and one ``numpy.random.Generator``; one draw of the random shape serves
every frame of a clip (a mask that jumped from frame to frame would be a cue the real box lacks).
"""

from __future__ import annotations

import numpy as np

KINDS = ("jitter", "curved_box")


def _smooth_field(rng: np.random.Generator, height: int, width: int, cells: int = 6) -> np.ndarray:
    """Values in [0, 1] that vary smoothly over an (H, W) frame (coarse noise, bilinear upsampled)."""
    import cv2

    coarse = rng.random((cells, cells)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def jitter_contour(masks: np.ndarray, rng: np.random.Generator, max_grow: float = 0.06,
                   min_grow: float = 0.01) -> np.ndarray:
    """Masks grown by between ``min_grow`` and ``max_grow`` x the frame's short side, varying along
    the contour. Returns bool (F,H,W), a superset of ``masks``."""
    import cv2

    masks = np.asarray(masks, bool)
    f, h, w = masks.shape
    short = min(h, w)
    field = _smooth_field(rng, h, w)
    reach = (min_grow + (max_grow - min_grow) * field) * short
    out = np.zeros_like(masks)
    for i in range(f):
        if not masks[i].any():
            continue
        dist = cv2.distanceTransform((~masks[i]).astype(np.uint8), cv2.DIST_L2, 5)
        out[i] = masks[i] | (dist <= reach)
    return out


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def curved_box(masks: np.ndarray, rng: np.random.Generator, amplitude: float = 0.08) -> np.ndarray:
    """Each frame's mask replaced by its bounding box with curved edges: every edge moves in or out
    by a smooth profile of at most ``amplitude`` x the box side (ends pinned at 0, so corners stay).
    Returns bool (F,H,W); it covers the mask and the box shrunk by ``amplitude`` on every side."""
    masks = np.asarray(masks, bool)
    f, h, w = masks.shape
    # Per edge: a sum of two half-sine bumps with random signed weights, |profile| <= 1.
    weights = rng.uniform(-1.0, 1.0, size=(4, 2)) / 2.0
    out = np.zeros_like(masks)
    for i in range(f):
        box = _bbox(masks[i])
        if box is None:
            continue
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        u = (np.arange(w) + 0.5 - x0) / max(bw, 1)  # 0..1 along the top/bottom edges
        v = (np.arange(h) + 0.5 - y0) / max(bh, 1)  # 0..1 along the left/right edges

        def profile(t, k):
            t = np.clip(t, 0.0, 1.0)
            return weights[k, 0] * np.sin(np.pi * t) + weights[k, 1] * np.sin(2 * np.pi * t)

        top = y0 - amplitude * bh * profile(u, 0)  # positive weight bulges outwards
        bottom = y1 + amplitude * bh * profile(u, 1)
        left = x0 - amplitude * bw * profile(v, 2)
        right = x1 + amplitude * bw * profile(v, 3)
        yy = np.arange(h)[:, None] + 0.5
        xx = np.arange(w)[None, :] + 0.5
        out[i] = (yy >= top[None, :]) & (yy <= bottom[None, :]) & (xx >= left[:, None]) & (xx <= right[:, None])
    return out | masks


def augment(masks: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "jitter":
        return jitter_contour(masks, rng)
    if kind == "curved_box":
        return curved_box(masks, rng)
    raise ValueError(f"unknown mask augmentation {kind!r}; known: {', '.join(KINDS)}")
