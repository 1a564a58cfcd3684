"""The DWPose backend with random ONNX models of the real I/O signature: parsing, shapes, decoding
of planted detections / SimCC peaks, and no SSL downgrade or network access."""

from __future__ import annotations

import importlib.util
import socket
import ssl
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from anycharv.errors import WeightsError
from anycharv.preprocessing.config import PoseConfig, PreprocessConfig
from anycharv.preprocessing.pose_dwpose import DWPoseEstimator, decode_simcc

_spec = importlib.util.spec_from_file_location("anycharv_test_onnx_fixtures",
                                               Path(__file__).with_name("onnx_fixtures.py"))
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)

# Planted peaks: COCO-WholeBody index -> (simcc_x bin, simcc_y bin); bins are half pixels of 288x384.
PEAKS = {0: (288, 100), 5: (400, 300), 6: (176, 300), 100: (50, 700), 132: (575, 767)}


def expected_pixel(box, bx, by):
    """Independent statement of the top-down mapping: box padded 1.25x, aspect fixed to 3:4,
    model-input pixel (bin / 2) scaled back to the image."""
    x1, y1, x2, y2 = box
    w, h = (x2 - x1) * 1.25, (y2 - y1) * 1.25
    if w > h * 0.75:
        h = w / 0.75
    else:
        w = h * 0.75
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return cx - w / 2 + (bx / 2) / 288 * w, cy - h / 2 + (by / 2) / 384 * h


@pytest.fixture(scope="module")
def dwpose_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dwpose")
    fixtures.make_pose(d / "dw-ll_ucoco_384.onnx", PEAKS)
    # One person box 160x320 (input pixels) centred on stride-32 cell (10, 9): centre (336, 304).
    fixtures.make_detector(d / "yolox_l.onnx", [(32, 10, 9, 160.0, 320.0)])
    return d


def test_decode_simcc_planted_peak():
    sx = np.zeros((2, 133, 576), np.float32)
    sy = np.zeros((2, 133, 768), np.float32)
    sx[1, 7, 301] = 0.8
    sy[1, 7, 55] = 0.6
    locs, scores = decode_simcc(sx, sy)
    assert locs.shape == (2, 133, 2) and scores.shape == (2, 133)
    np.testing.assert_allclose(locs[1, 7], [150.5, 27.5])
    assert scores[1, 7] == pytest.approx(0.6)


def test_dwpose_backend_decodes_planted_keypoints_to_the_right_pixels(dwpose_dir):
    est = DWPoseEstimator(PoseConfig(backend="dwpose", dwpose_dir=str(dwpose_dir), device="cpu", batch=2))
    assert est.layout == "dwpose134"
    frames = np.random.default_rng(0).integers(0, 255, (3, 480, 640, 3)).astype(np.uint8)
    boxes = np.array([[100, 50, 300, 450], [np.nan] * 4, [320, 100, 560, 260]], np.float32)
    kps = est(frames, boxes)
    assert kps.shape == (3, 134, 3) and kps.dtype == np.float32
    assert not kps[1].any()  # no box, no pose
    to134 = {0: 0, 5: 5, 6: 2, 100: 101, 132: 133}
    for f in (0, 2):
        for k, (bx, by) in PEAKS.items():
            ex, ey = expected_pixel(boxes[f], bx, by)
            np.testing.assert_allclose(kps[f, to134[k], :2], [ex, ey], atol=1e-3)
            assert kps[f, to134[k], 2] == pytest.approx(0.9)
        # neck = midpoint of the shoulders
        np.testing.assert_allclose(kps[f, 1, :2], (kps[f, 2, :2] + kps[f, 5, :2]) / 2, atol=1e-4)
    assert kps[0, 10, 2] < 0.2  # an unplanted point keeps its low random score


def test_dwpose_detector_decode_and_boxless_mode(dwpose_dir):
    est = DWPoseEstimator(PoseConfig(backend="dwpose", dwpose_dir=str(dwpose_dir), device="cpu"))
    image = np.zeros((480, 800, 3), np.uint8)  # letterbox ratio 640/800 = 0.8
    boxes, scores = est.detect(image)
    assert boxes.shape == (1, 4)
    np.testing.assert_allclose(boxes[0], np.array([256, 144, 416, 464]) / 0.8, atol=1e-3)
    assert scores[0] == pytest.approx(0.81, abs=1e-5)
    kps = est(image[None], None)
    ex, ey = expected_pixel(boxes[0], *PEAKS[0])
    np.testing.assert_allclose(kps[0, 0, :2], [ex, ey], atol=1e-3)


def test_dwpose_missing_or_wrong_models_raise_weights_error(tmp_path):
    # The config refuses them when it is loaded, long before a stage's setup ...
    with pytest.raises(ValidationError, match="pose.dwpose_dir: required"):
        PoseConfig(backend="dwpose")
    with pytest.raises(ValidationError, match="no dw-ll_ucoco_384.onnx in it"):
        PoseConfig(backend="dwpose", dwpose_dir=str(tmp_path))
    # ... and the estimator keeps its own checks for a config built without validation.
    with pytest.raises(WeightsError, match="dwpose_dir"):
        DWPoseEstimator(PoseConfig.model_construct(backend="dwpose", dwpose_dir=None))
    with pytest.raises(WeightsError, match="not found"):
        DWPoseEstimator(PoseConfig.model_construct(backend="dwpose", dwpose_dir=str(tmp_path)))


def test_dwpose_backend_keeps_ssl_verification_and_stays_offline(dwpose_dir, monkeypatch):
    attempts = []
    real_connect = socket.socket.connect

    def recording_connect(self, address):
        attempts.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    from anycharv.preprocessing.pose import build_pose_estimator

    cfg = PreprocessConfig(pose={"backend": "dwpose", "dwpose_dir": str(dwpose_dir), "device": "cpu"})
    est = build_pose_estimator(cfg.pose)
    est(np.zeros((2, 240, 320, 3), np.uint8), np.array([[10, 10, 100, 200]] * 2, np.float32))
    assert attempts == []
    assert ssl.create_default_context().verify_mode == ssl.CERT_REQUIRED
    assert ssl._create_default_https_context is ssl.create_default_context
