"""Target-video preparation on a real video with two people, and real reference segmentation."""

from __future__ import annotations

import numpy as np
import pytest

from anycharv.assets import asset_path
from anycharv.errors import InputError
from anycharv.inference.target_prep import fill_box_gaps, model_size, pad_boxes, prepare_target

VIDEO = "pose2sim_cam01.mp4"  # 1080x1920, 60 fps; person 1 in the middle, person 2 cut by the left edge


@pytest.fixture(scope="module")
def tracker():
    from anycharv.preprocessing.config import DetectConfig
    from anycharv.preprocessing.detect_track import PersonTracker

    return PersonTracker(DetectConfig())


def test_model_size_keeps_aspect_and_checks_vae_factor():
    assert model_size((1768, 994), 64) == (112, 64)
    assert model_size((1080, 1920), 576) == (576, 1024)
    assert model_size((1080, 1920), (512, 768)) == (512, 768)
    for bad in (60, 0, (512, 770), (4, 64)):
        with pytest.raises(InputError) as err:
            model_size((1080, 1920), bad)
        assert err.value.input_name == "size"


def test_model_canvas_of_extreme_aspect_ratios_is_capped():
    """A 1000x64 strip at short side 128 would run the model at 2000x128: the long side is capped
    (default 2.5x the short side) and the short side shrinks with it, keeping the aspect ratio."""
    assert model_size((1000, 64), 128, 0) == (2000, 128)  # uncapped, as before
    assert model_size((1000, 64), 128) == (320, 16)
    assert model_size((64, 1000), 128, 512) == (32, 512)
    assert model_size((1920, 1080), 576) == (1024, 576)  # ordinary videos are not touched
    with pytest.raises(InputError) as err:
        model_size((1000, 64), 128, 100)
    assert err.value.input_name == "max_long_side"


def test_box_gap_filling_and_padding():
    boxes = fill_box_gaps({2: np.array([0, 0, 10, 10]), 4: np.array([10, 10, 20, 30])}, 6)
    assert np.allclose(boxes[0], [0, 0, 10, 10]) and np.allclose(boxes[3], [5, 5, 15, 20])
    assert np.allclose(boxes[5], [10, 10, 20, 30])
    padded = pad_boxes(np.array([[10, 10, 30, 50]]), 0.1, 100, 52)
    assert np.allclose(padded, [[8, 6, 32, 52]])  # 2 px / 4 px per side, clipped at the bottom


def test_choose_person_and_inputs(tracker):
    video = str(asset_path(VIDEO))
    main = prepare_target(video, size=64, max_frames=5, tracker=tracker, box_pad=0.0)
    assert main.track_ids == [1, 2] and main.track_id == 1  # default: longest, then largest track
    assert main.fps == 60 and main.source_size == (1080, 1920) and main.model_size == (64, 112)
    n = 5
    assert main.frames.shape == (n, 112, 64, 3) and main.frames.dtype == np.uint8
    assert main.masks.shape == (n, 112, 64) and set(np.unique(main.masks)) == {0, 255}
    assert main.poses.shape == (n, 112, 64, 3) and main.source_frames.shape == (n, 1920, 1080, 3)
    assert main.boxes.shape == (n, 4) and main.keypoint_layout == "openpose18"
    other = prepare_target(video, person=2, size=64, max_frames=5, tracker=tracker, box_pad=0.0)
    assert other.track_id == 2
    # Person 2 stands at the left edge, person 1 in the middle: their boxes and masks differ.
    assert other.boxes[:, 2].mean() < main.boxes[:, 0].mean()
    assert (other.masks[:, :, :4] == 255).any(axis=(1, 2)).all() and not main.masks[:, :, :4].any()
    # Pose renders are drawn inside (a slightly enlarged) box of the chosen person.
    for t in (main, other):
        drawn = t.poses.max(axis=3) > 0
        assert drawn.any()
        near_box = pad_boxes(t.boxes, 0.15, 1080, 1920) * (64 / 1080)
        from anycharv.boxes import boxes_to_masks

        assert (drawn & (boxes_to_masks(near_box, 112, 64) == 0)).sum() <= 0.02 * drawn.sum()
    with pytest.raises(InputError) as err:
        prepare_target(video, person=42, size=64, max_frames=5, tracker=tracker)
    assert err.value.input_name == "person" and "1, 2" in str(err.value) and err.value.code == "person_not_found"


def test_reference_segmented_with_isnet_keeps_aspect():
    from anycharv.inference.video import isnet_segmenter
    from anycharv.model.reference_prep import load_image, prepare_reference

    seg = isnet_segmenter()
    path = asset_path("zidane.jpg")  # two men in a 1280x720 photo: the cut-out is much smaller
    rgb, _ = load_image(path)
    ref = prepare_reference(path, 64, 96, segment=seg, margin=0.0)
    x0, y0, x1, y1 = ref.placement.crop
    assert ref.segmented and (x1 - x0) < 0.95 * rgb.shape[1]
    assert abs(ref.placement.w / ref.placement.h - (x1 - x0) / (y1 - y0)) < 2.0 / ref.placement.h
    assert ref.image.shape == (96, 64, 3)
    assert np.all(ref.image[ref.mask == 0] == 0)  # background black outside the character
    assert (ref.mask > 127).mean() > 0.1
