"""Fine-mask augmentations (``anycharv.datasets.augment``): jitter only grows the mask, the curved
box stays between the box shrunk and grown by ``amplitude``; one random shape per clip."""

from __future__ import annotations

import numpy as np
import pytest

from anycharv.datasets.augment import augment, curved_box, jitter_contour


def random_masks(seed: int, frames: int = 3, height: int = 72, width: int = 56) -> np.ndarray:
    """Blobby person-like masks: a few random ellipses per frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width] + 0.5
    masks = np.zeros((frames, height, width), bool)
    for f in range(frames):
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
            ry, rx = rng.uniform(0.05, 0.3) * height, rng.uniform(0.05, 0.3) * width
            masks[f] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return masks


def pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:height, :width]
    return yy + 0.5, xx + 0.5


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("seed", range(8))
def test_jitter_contains_the_original_and_grows_within_max_grow(seed):
    masks = random_masks(seed)
    out = jitter_contour(masks, np.random.default_rng(seed), max_grow=0.06)
    assert out.shape == masks.shape and out.dtype == bool
    assert np.all(out[masks])  # superset
    assert out.sum() > masks.sum()  # min_grow > 0: it does grow
    import cv2

    reach = 0.06 * min(masks.shape[1:]) + 1.5  # distance transform of mask size 5 is approximate
    for f in range(len(masks)):
        dist = cv2.distanceTransform((~masks[f]).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        assert np.all(dist[out[f]] <= reach)


def test_jitter_keeps_empty_frames_empty():
    masks = random_masks(0)
    masks[1] = False
    out = jitter_contour(masks, np.random.default_rng(0))
    assert not out[1].any() and np.all(out[0][masks[0]])


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("amplitude", [0.08, 0.2])
def test_curved_box_between_shrunk_and_grown_box(seed, amplitude):
    masks = random_masks(seed)
    out = curved_box(masks, np.random.default_rng(seed), amplitude=amplitude)
    assert out.shape == masks.shape and out.dtype == bool
    yy, xx = pixel_centres(*masks.shape[1:])
    for f in range(len(masks)):
        x0, y0, x1, y1 = box_of(masks[f])
        ax, ay = amplitude * (x1 - x0), amplitude * (y1 - y0)
        core = (xx >= x0 + ax) & (xx <= x1 - ax) & (yy >= y0 + ay) & (yy <= y1 - ay)
        outer = (xx >= x0 - ax) & (xx <= x1 + ax) & (yy >= y0 - ay) & (yy <= y1 + ay)
        assert np.all(out[f][core]), "the shrunk box must be covered"
        assert not np.any(out[f] & ~outer), "nothing outside the grown box"


def test_curved_box_is_not_just_the_box():
    masks = random_masks(3)
    out = curved_box(masks, np.random.default_rng(1), amplitude=0.2)
    x0, y0, x1, y1 = box_of(masks[0])
    box = np.zeros_like(masks[0])
    box[y0:y1, x0:x1] = True
    assert not np.array_equal(out[0], box)


def test_one_random_shape_per_clip():
    one = random_masks(5, frames=1)
    clip = np.repeat(one, 4, axis=0)
    for kind in ("jitter", "curved_box"):
        out = augment(clip, kind, np.random.default_rng(2))
        assert all(np.array_equal(out[0], out[f]) for f in range(1, 4)), kind
    with pytest.raises(ValueError, match="unknown mask augmentation"):
        augment(clip, "blur", np.random.default_rng(0))
