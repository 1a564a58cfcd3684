"""Unit checks of the preprocessing building blocks (no models): config, resize policy, shot cuts,
windows, annotation files, filter rules, keypoint layouts and pose rendering."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from anycharv.config import load_config
from anycharv.errors import ConfigError
from anycharv.model.pose_render import JOINT_COLORS, render_pose
from anycharv.preprocessing import annotations as ann
from anycharv.preprocessing.config import FilterConfig, PreprocessConfig
from anycharv.preprocessing.filter import check_clip, check_people
from anycharv.preprocessing.pose import coco_to_openpose, wholebody_to_dwpose134
from anycharv.preprocessing.shot_cuts import detect_shot_cuts, shot_ranges, split_windows
from anycharv.preprocessing.video_io import processing_size

REPO = Path(__file__).resolve().parents[2]


def test_yaml_defaults_match_the_model_and_bad_values_name_the_key():
    assert load_config(PreprocessConfig, REPO / "configs" / "preprocess.yaml") == PreprocessConfig()
    with pytest.raises(ConfigError, match="min_len"):
        load_config(PreprocessConfig, None, ["split.clip_len=8", "split.min_len=12"])
    with pytest.raises(ConfigError, match="size_multiple"):
        load_config(PreprocessConfig, None, ["decode.size_multiple=10"])
    with pytest.raises(ConfigError, match="people_rule"):
        load_config(PreprocessConfig, None, ["filter.people_rule=two"])
    cfg = load_config(PreprocessConfig, None, ["decode.short_side=384", "mask.backend=ultralytics"])
    assert cfg.decode.short_side == 384 and cfg.mask.backend == "ultralytics"


@pytest.mark.parametrize("src,short,mult,expected", [
    ((1768, 994), 512, 64, (896, 512)),
    ((1080, 1920), 512, 64, (512, 896)),
    ((1080, 1920), 512, 8, (512, 912)),
    ((320, 240), 512, 64, (320, 256)),  # no upscaling: short side stays 240 -> rounded to 256
])
def test_processing_size_policy(src, short, mult, expected):
    w, h = processing_size(*src, short_side=short, multiple=mult)
    assert (w, h) == expected
    assert w % mult == 0 and h % mult == 0


def test_shot_cut_detector_finds_a_hard_cut_and_ignores_motion():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 80, (1, 36, 64)).astype(np.uint8)
    b = rng.integers(150, 255, (1, 36, 64)).astype(np.uint8)
    shot_a = np.repeat(a, 10, 0) + rng.integers(0, 4, (10, 36, 64)).astype(np.uint8)
    shot_b = np.repeat(b, 7, 0)
    grey = np.concatenate([shot_a, shot_b])
    assert detect_shot_cuts(grey, threshold=0.15) == [10]
    # Uniformly high differences (a fast pan over noise) are not cuts.
    noise = rng.integers(0, 255, (12, 36, 64)).astype(np.uint8)
    assert detect_shot_cuts(noise, threshold=0.15, ratio=3.0) == []


def test_windows_respect_shots_stride_and_min_len():
    shots = shot_ranges(50, [20])
    assert shots == [(0, 20), (20, 50)]
    wins = split_windows(shots, clip_len=8, stride=8, min_len=4)
    assert wins == [(0, 8), (8, 16), (16, 20), (20, 28), (28, 36), (36, 44), (44, 50)]
    assert all(not (a < 20 < b) for a, b in wins)
    assert split_windows(shots, 8, 8, 6) == [(0, 8), (8, 16), (20, 28), (28, 36), (36, 44), (44, 50)]
    assert split_windows([(0, 20)], 8, 4, 8) == [(0, 8), (4, 12), (8, 16), (12, 20)]


def test_annotation_files_round_trip_without_pickle(tmp_path):
    rng = np.random.default_rng(1)
    masks = rng.random((3, 37, 29)) > 0.5  # sizes not multiples of 8
    boxes = np.array([[1, 2, 10, 20], [np.nan] * 4, [3, 4, 5, 6]], np.float32)
    kps = rng.random((3, 18, 3)).astype(np.float32)
    assert ann.save_masks(tmp_path, masks) == "masks.npz"
    ann.save_array(tmp_path, "boxes", boxes)
    ann.save_array(tmp_path, "keypoints", kps)
    ann.save_png(tmp_path, "preview", (rng.random((8, 12, 3)) * 255).astype(np.uint8))
    back = ann.load_clip_annotations(tmp_path)
    assert set(back) == {"masks", "boxes", "keypoints", "preview"}
    np.testing.assert_array_equal(back["masks"], masks)
    np.testing.assert_array_equal(back["boxes"], boxes)
    np.testing.assert_array_equal(back["keypoints"], kps)
    assert back["preview"].shape == (8, 12, 3)
    with np.load(tmp_path / "masks.npz", allow_pickle=False) as data:
        assert data["bits"].dtype == np.uint8 and data["bits"].size == int(np.ceil(masks.size / 8))
        assert list(data["shape"]) == [3, 37, 29]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_filter_people_rules_and_reason_codes():
    cfg = FilterConfig()
    box = np.array([100, 50, 200, 350], np.float32)
    boxes = np.tile(box, (8, 1))
    ones = np.ones(8, np.int16)
    assert check_people(boxes, ones, 0.0, 640, 384, cfg) is None
    two = ones.copy()
    two[3] = 2
    assert check_people(boxes, two, 0.1, 640, 384, cfg)[0] == "multiple_people"
    dom = FilterConfig(people_rule="main_dominant", dominant_ratio=0.4)
    assert check_people(boxes, two, 0.1, 640, 384, dom) is None
    assert check_people(boxes, two, 0.8, 640, 384, dom)[0] == "multiple_people"
    assert check_people(boxes, two, 0.8, 640, 384, FilterConfig(people_rule="off")) is None
    missing = boxes.copy()
    missing[:3] = np.nan
    assert check_people(missing, ones, 0.0, 640, 384, cfg)[0] == "no_person"
    assert check_people(np.full((8, 4), np.nan, np.float32), np.zeros(8, np.int16), 0, 640, 384, cfg)[0] == "no_person"
    tiny = np.tile(np.array([10, 10, 20, 30], np.float32), (8, 1))
    assert check_people(tiny, ones, 0.0, 640, 384, cfg)[0] == "box_too_small"
    assert check_clip({"mean_kp_conf": 0.1}, cfg)[0] == "low_pose_confidence"
    assert check_clip({"mean_kp_conf": 0.8, "mask_box_coverage": 0.01}, cfg)[0] == "mask_empty"
    assert check_clip({"mask_box_coverage": 0.5, "mask_outside_box": 0.9}, cfg)[0] == "mask_outside_box"
    assert check_clip({"mean_kp_conf": 0.8, "mask_box_coverage": 0.5, "mask_outside_box": 0.1}, cfg) is None


def test_coco_to_openpose_mapping_and_neck():
    coco = np.zeros((17, 3), np.float32)
    coco[:, 0] = np.arange(17)  # x = COCO index, so the mapping is visible
    coco[:, 2] = 0.5
    coco[5] = [10, 20, 0.9]  # left shoulder
    coco[6] = [30, 40, 0.7]  # right shoulder
    op = coco_to_openpose(coco)
    assert op.shape == (18, 3)
    np.testing.assert_allclose(op[1], [20, 30, 0.7])  # neck = shoulder midpoint, lower score
    assert op[2, 0] == 30 and op[5, 0] == 10  # r-shoulder, l-shoulder
    assert [op[i, 0] for i in (0, 3, 4, 6, 7, 8, 11, 14, 15, 16, 17)] == [0, 8, 10, 7, 9, 12, 11, 2, 1, 4, 3]
    wb = np.zeros((133, 3), np.float32)
    wb[17:, 0] = np.arange(17, 133)
    d = wholebody_to_dwpose134(wb)
    assert d.shape == (134, 3) and d[18, 0] == 17 and d[133, 0] == 132


def test_render_pose_draws_openpose_colours_on_black():
    h, w = 256, 192
    kp = np.zeros((18, 3), np.float32)
    pts = {0: (96, 30), 1: (96, 60), 2: (70, 60), 5: (122, 60), 8: (80, 140), 11: (112, 140), 3: (60, 100),
           4: (55, 130)}
    for j, (x, y) in pts.items():
        kp[j] = [x, y, 0.9]
    img = render_pose(kp, "openpose18", h, w, 0.3)
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    for j, (x, y) in pts.items():
        assert tuple(img[y, x]) == JOINT_COLORS[j]
    drawn = img.any(-1)
    assert 0.005 < drawn.mean() < 0.2
    assert not drawn[200:, :].any() and not drawn[:, :40].any()  # black away from the person
    # Low-confidence points are not drawn.
    faint = kp.copy()
    faint[:, 2] = 0.1
    assert not render_pose(faint, "openpose18", h, w, 0.3).any()
    # Whole-body layout: face dots white, hand points present.
    wb = np.zeros((134, 3), np.float32)
    wb[:18] = kp
    wb[24:92] = [96, 25, 0.9]
    wb[92:113] = [40, 150, 0.9]
    full = render_pose(wb, "dwpose134", h, w, 0.3)
    assert tuple(full[25, 96]) == (255, 255, 255)
    assert full[150, 40].any()
