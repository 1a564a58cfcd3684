"""Box rasterisation shared by preprocessing, inference and paste-back (``anycharv.boxes``)."""

from __future__ import annotations

import numpy as np
import pytest

from anycharv.boxes import boxes_to_masks
from anycharv.errors import InputError


def test_fractional_box_edges_round_outwards():
    masks = boxes_to_masks(np.array([[2.5, 1.2, 5.01, 3.0]]), 8, 8)
    rows, cols = np.nonzero(masks[0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (1, 2, 2, 5)
    assert np.all(masks[0][masks[0] > 0] == 255)


def test_integer_edges_cover_exactly_the_box_and_one_mask_per_row():
    masks = boxes_to_masks(np.array([[1, 2, 4, 5], [0, 0, 6, 3]]), 6, 6)
    assert masks.shape == (2, 6, 6) and masks.dtype == np.uint8
    expected = np.zeros((6, 6), np.uint8)
    expected[2:5, 1:4] = 255
    assert np.array_equal(masks[0], expected)
    assert int(masks[1].sum()) == 255 * 6 * 3


def test_boxes_outside_or_across_the_frame_are_clipped():
    masks = boxes_to_masks(np.array([[-5, -5, 2, 2], [10, 10, 20, 20], [3, 3, 3, 8]]), 4, 4)
    assert np.array_equal(np.argwhere(masks[0]), [[0, 0], [0, 1], [1, 0], [1, 1]])
    assert not masks[1].any()  # entirely outside
    assert not masks[2].any()  # zero width


def test_non_finite_rows_give_empty_masks():
    masks = boxes_to_masks(np.array([[np.nan, 0, 2, 2], [0, 0, np.inf, 2], [0, 0, 2, 2]]), 4, 4)
    assert not masks[0].any() and not masks[1].any() and masks[2].sum() == 255 * 4


@pytest.mark.parametrize("boxes", [np.zeros(4), np.zeros((2, 5)), np.zeros((1, 2, 4))])
def test_wrong_shape_is_an_input_error_naming_boxes(boxes):
    with pytest.raises(InputError) as err:
        boxes_to_masks(boxes, 4, 4)
    assert err.value.input_name == "boxes"
