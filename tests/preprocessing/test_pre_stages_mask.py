"""ISNet input sized to the crop (``mask.fit_crop``, opt-in): the square input's side is the crop's
long side rounded up to a multiple of 128, at most ``mask.size``. Off by default: ISNet's masks
change with its input size (the agreement with the fixed-size path on the sample videos is
measured by ``benchmarks/preprocess.py``, not asserted here, because it is far below IoU 0.95)."""

from __future__ import annotations

import numpy as np
import pytest

from anycharv.assets import asset_path
from anycharv.preprocessing.config import MaskConfig, PreprocessConfig
from anycharv.preprocessing.detect_track import PersonTracker
from anycharv.preprocessing.fine_mask import IsnetMasker, crop_box, isnet_input_size
from anycharv.preprocessing.plan import plan_video
from anycharv.preprocessing.stages import clip_frames


@pytest.mark.parametrize("h, w, cap, side", [
    (200, 100, 512, 256), (384, 10, 512, 384), (385, 200, 512, 512), (900, 300, 512, 512),
    (50, 20, 1024, 128), (1, 1, 128, 128), (700, 1000, 1024, 1024),
])
def test_input_side_is_the_crop_long_side_rounded_up_to_128_and_capped(h, w, cap, side):
    assert isnet_input_size(h, w, cap) == side


@pytest.fixture(scope="module")
def clip():
    """Frames and main-character boxes of a real clip of each sample video at short side 512:
    sports2d's walker is small (crops below 384 pixels), pose2sim's runner large (above 384)."""
    cfg = PreprocessConfig.model_validate({
        "decode": {"short_side": 512}, "split": {"clip_len": 3, "stride": 3, "min_len": 3, "max_clips_per_video": 1},
        "detect": {"imgsz": 416, "device": "cpu"}, "mask": {"size": 512, "device": "cpu", "fit_crop": True}})
    tracker = PersonTracker(cfg.detect)
    out = {}
    for video in ("sports2d_demo.mp4", "pose2sim_cam01.mp4"):
        [task] = plan_video(str(asset_path(video)), cfg, "/tmp/unused")
        frames = clip_frames(task)
        out[video] = (frames, tracker.track(frames).boxes)
    return cfg, out


def _sides(masker, frames, boxes) -> list[int]:
    sides = []
    for box in boxes:
        x1, y1, x2, y2 = crop_box(box, masker.cfg.crop_margin, frames.shape[2], frames.shape[1])
        sides.append(masker.input_size(y2 - y1, x2 - x1))
    return sides


def test_fixed_size_is_the_default():
    assert MaskConfig().fit_crop is False


def test_crop_sizing_changes_only_the_input_size(clip):
    """Where the crop's rounded side reaches mask.size the two paths are the same computation
    (bit-equal masks); where it does not, the input is smaller and a mask of the frame comes out."""
    cfg, data = clip
    fitted = IsnetMasker(cfg.mask)
    fixed = IsnetMasker(cfg.mask.model_copy(update={"fit_crop": False}))
    frames, boxes = data["pose2sim_cam01.mp4"]
    assert not np.isnan(boxes).any() and set(_sides(fitted, frames, boxes)) == {cfg.mask.size}
    np.testing.assert_array_equal(fitted(frames, boxes).masks, fixed(frames, boxes).masks)
    frames, boxes = data["sports2d_demo.mp4"]
    assert not np.isnan(boxes).any()
    assert max(_sides(fitted, frames, boxes)) < cfg.mask.size and set(_sides(fixed, frames, boxes)) == {cfg.mask.size}
    small = fitted(frames, boxes)
    assert small.masks.shape == frames.shape[:3] and small.masks.any(axis=(1, 2)).all()
