"""Paste-back compositing: the outside of the region is the source, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from anycharv.boxes import boxes_to_masks
from anycharv.errors import InputError
from anycharv.model.compositing import composite, feather_alpha


def _frames(rng, n, h, w):
    return rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def test_outside_box_is_bit_identical_and_deep_inside_is_generated():
    rng = np.random.default_rng(0)
    original, generated = _frames(rng, 4, 60, 80), _frames(rng, 4, 60, 80)
    boxes = np.array([[10, 5, 50, 40], [12.4, 6.6, 51.2, 41.9], [0, 0, 30, 60], [40, 20, 80, 59]], float)
    out = composite(original, generated, boxes, feather_px=4)
    assert out.dtype == np.uint8 and out.shape == original.shape
    inside = boxes_to_masks(boxes, 60, 80) > 0
    assert np.array_equal(out[~inside], original[~inside])
    # More than feather_px away from the box border (frame borders do not count) -> pure generated.
    core = np.zeros_like(inside)
    core[0, 10:35, 15:45] = True
    assert np.array_equal(out[core], generated[core])
    # The feather ramp mixes both: some inside pixels differ from both sources.
    ring = inside & ~core
    ring[1:] = False
    assert np.any((out[ring] != original[ring]) & (out[ring] != generated[ring]))


def test_feather_alpha_ramps_inward_and_is_zero_outside():
    mask = np.zeros((1, 40, 40), np.uint8)
    mask[0, 10:30, 10:30] = 255
    alpha = feather_alpha(mask, 5)[0]
    assert np.all(alpha[mask[0] == 0] == 0)
    row = alpha[20, 10:20]
    assert np.all(np.diff(row) >= 0) and row[0] > 0 and row[-1] == 1.0
    assert np.array_equal(feather_alpha(mask, 0)[0], (mask[0] > 0).astype(np.float32))


def test_region_touching_the_frame_edge_has_no_ramp_there():
    mask = np.zeros((1, 20, 20), np.uint8)
    mask[0, :, :10] = 255
    alpha = feather_alpha(mask, 4)[0]
    assert alpha[10, 0] == 1.0 and alpha[0, 5] == 1.0 and alpha[10, 9] < 1.0


def test_masks_and_float_generated_at_model_size():
    rng = np.random.default_rng(1)
    original = _frames(rng, 3, 48, 64)
    generated = rng.random((3, 24, 32, 3)).astype(np.float32)  # half size, floats in [0,1]
    masks = np.zeros((3, 48, 64), np.uint8)
    masks[:, 8:40, 20:44] = 255
    masks[2] = 0  # a frame without the person: must come back untouched
    out = composite(original, generated, masks, feather_px=3)
    assert np.array_equal(out[masks == 0], original[masks == 0])
    assert np.array_equal(out[2], original[2])
    assert not np.array_equal(out[0, 20:28, 28:36], original[0, 20:28, 28:36])


@pytest.mark.parametrize(
    "gen_shape, region, name",
    [((3, 16, 16, 3), np.zeros((4, 4)), "generated"),
     ((4, 16, 16, 3), np.zeros((3, 4)), "region"),
     ((4, 16, 16, 3), np.zeros((4, 8, 8), np.uint8), "region"),
     ((4, 16, 16, 3), np.zeros((4, 5)), "region")],
)
def test_mismatched_inputs_raise_input_error(gen_shape, region, name):
    original = np.zeros((4, 16, 16, 3), np.uint8)
    with pytest.raises(InputError) as err:
        composite(original, np.zeros(gen_shape, np.uint8), region)
    assert err.value.input_name == name
