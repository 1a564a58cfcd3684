"""DWPose whole-body pose run directly with onnxruntime (own pre/post-processing).

The ``dwpose`` PyPI package is deliberately not imported: it downloads at import time and turns off
SSL certificate verification for the whole process. Here only two local ONNX files are read:

- detector (YOLOX, ``images [1,3,640,640] -> [1,8400,85]``): letterboxed BGR 0..255 input; raw
  grid outputs decoded with strides 8/16/32; used only when no track box is given;
- pose (RTMPose/DWPose ``dw-ll_ucoco_384``, ``input [N,3,384,288] -> simcc_x [N,133,576],
  simcc_y [N,133,768]``): top-down affine crop of the box (padded 1.25x, aspect fixed to 3:4),
  ImageNet-normalised RGB, SimCC argmax decode with split ratio 2.0.
Output layout ``dwpose134`` (see ``pose.py``); scores clipped to [0, 1].
"""

from __future__ import annotations

import os

import numpy as np

from anycharv.devices import pick_device
from anycharv.errors import WeightsError
from anycharv.preprocessing.config import PoseConfig
from anycharv.preprocessing.pose import wholebody_to_dwpose134

POSE_W, POSE_H = 288, 384
SIMCC_SPLIT = 2.0
DET_SIZE = 640
DET_STRIDES = (8, 16, 32)
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
BOX_PAD = 1.25


def box_to_center_scale(box: np.ndarray, pad: float = BOX_PAD) -> tuple[np.ndarray, np.ndarray]:
    """Center and (w, h) of the crop: the box padded by ``pad`` with its aspect fixed to 288:384."""
    x1, y1, x2, y2 = [float(v) for v in box]
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float32)
    w, h = (x2 - x1) * pad, (y2 - y1) * pad
    aspect = POSE_W / POSE_H
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([max(w, 1e-3), max(h, 1e-3)], np.float32)


def crop_affine(center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """2x3 matrix mapping image pixels to the 288x384 model input (no rotation)."""
    s = POSE_W / scale[0]  # equals POSE_H / scale[1] since the aspect is fixed
    return np.array([[s, 0, POSE_W / 2 - s * center[0]], [0, s, POSE_H / 2 - s * center[1]]], np.float32)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray,
                 split: float = SIMCC_SPLIT) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, Wx), (N, K, Wy) -> locations (N, K, 2) in model-input pixels and scores (N, K)
    (the lower of the two axis maxima)."""
    xs = np.argmax(simcc_x, axis=-1).astype(np.float32) / split
    ys = np.argmax(simcc_y, axis=-1).astype(np.float32) / split
    scores = np.minimum(simcc_x.max(axis=-1), simcc_y.max(axis=-1)).astype(np.float32)
    locs = np.stack([xs, ys], axis=-1)
    return locs, scores


def input_to_image(locs: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Model-input pixel locations (K, 2) back to image pixels."""
    return locs / np.array([POSE_W, POSE_H], np.float32) * scale + center - scale / 2


def letterbox(image_rgb: np.ndarray, size: int = DET_SIZE) -> tuple[np.ndarray, float]:
    """YOLOX input: BGR, resized to fit ``size`` (top-left aligned), padded with 114."""
    import cv2

    h, w = image_rgb.shape[:2]
    r = min(size / h, size / w)
    resized = cv2.resize(image_rgb[..., ::-1], (int(round(w * r)), int(round(h * r))), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((size, size, 3), 114, np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas.transpose(2, 0, 1)[None].astype(np.float32), r


def decode_yolox(raw: np.ndarray, ratio: float, score_thr: float = 0.3, nms_thr: float = 0.45, size: int = DET_SIZE):
    """Raw YOLOX output (1, A, 5+C) -> person boxes (N, 4) xyxy in image pixels and scores (N,)."""
    import cv2

    pred = np.asarray(raw, np.float32)[0].copy()
    grids, strides = [], []
    for stride in DET_STRIDES:
        n = size // stride
        yy, xx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        grids.append(np.stack([xx, yy], -1).reshape(-1, 2))
        strides.append(np.full((n * n, 1), stride))
    grid = np.concatenate(grids).astype(np.float32)
    stride = np.concatenate(strides).astype(np.float32)
    if len(grid) != len(pred):
        raise WeightsError(f"YOLOX output has {len(pred)} anchors, expected {len(grid)} for {size}x{size}")
    xy = (pred[:, :2] + grid) * stride
    wh = np.exp(np.clip(pred[:, 2:4], -20, 20)) * stride
    scores = pred[:, 4] * pred[:, 5]  # objectness x person class
    keep = scores > score_thr
    if not keep.any():
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)[keep] / ratio
    scores = scores[keep]
    idx = cv2.dnn.NMSBoxes([[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes],
                           scores.tolist(), score_thr, nms_thr)
    idx = np.asarray(idx, int).reshape(-1)
    return boxes[idx].astype(np.float32), scores[idx].astype(np.float32)


class DWPoseEstimator:
    layout = "dwpose134"

    def __init__(self, cfg: PoseConfig):
        from anycharv.preprocessing.fine_mask import ort_session

        if not cfg.dwpose_dir:
            raise WeightsError("pose.dwpose_dir: required for the dwpose backend (folder with the ONNX files)")
        self.cfg = cfg
        pose_path = os.path.join(cfg.dwpose_dir, cfg.dwpose_pose_file)
        det_path = os.path.join(cfg.dwpose_dir, cfg.dwpose_det_file)
        if not os.path.isfile(pose_path):
            raise WeightsError(f"{pose_path}: DWPose pose model not found")
        device = pick_device(cfg.device)
        self.pose = ort_session(pose_path, device)
        shape = self.pose.get_inputs()[0].shape
        if list(shape[1:]) != [3, POSE_H, POSE_W]:
            raise WeightsError(f"{pose_path}: input shape {shape}, expected [N, 3, {POSE_H}, {POSE_W}]")
        self.det = ort_session(det_path, device) if os.path.isfile(det_path) else None

    def detect(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.det is None:
            raise WeightsError(f"{self.cfg.dwpose_det_file}: DWPose detector not found in {self.cfg.dwpose_dir}")
        x, ratio = letterbox(image_rgb)
        raw = self.det.run(None, {self.det.get_inputs()[0].name: x})[0]
        return decode_yolox(raw, ratio)

    def estimate(self, images: list[np.ndarray], boxes: np.ndarray) -> np.ndarray:
        """One box per image -> (N, 134, 3) keypoints in image pixels."""
        import cv2

        batch, metas = [], []
        for image, box in zip(images, boxes):
            center, scale = box_to_center_scale(box)
            crop = cv2.warpAffine(image, crop_affine(center, scale), (POSE_W, POSE_H), flags=cv2.INTER_LINEAR)
            batch.append(((crop.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1))
            metas.append((center, scale))
        if not batch:
            return np.zeros((0, 134, 3), np.float32)
        simcc_x, simcc_y = self.pose.run(None, {self.pose.get_inputs()[0].name: np.stack(batch)})[:2]
        locs, scores = decode_simcc(simcc_x, simcc_y)
        out = np.zeros((len(batch), locs.shape[1], 3), np.float32)
        for n, (center, scale) in enumerate(metas):
            out[n, :, :2] = input_to_image(locs[n], center, scale)
            out[n, :, 2] = np.clip(scores[n], 0, 1)
        return wholebody_to_dwpose134(out)

    def __call__(self, frames: np.ndarray, boxes: np.ndarray | None) -> np.ndarray:
        """(T, 134, 3) for the given main-character boxes; with ``boxes=None`` the detector picks the
        largest person per frame. Frames without a box get zeros."""
        t = len(frames)
        if boxes is None:
            boxes = np.full((t, 4), np.nan, np.float32)
            for i, frame in enumerate(frames):
                found, _ = self.detect(frame)
                if len(found):
                    areas = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
                    boxes[i] = found[int(np.argmax(areas))]
        out = np.zeros((t, 134, 3), np.float32)
        valid = [i for i in range(t) if not np.isnan(boxes[i]).any()]
        for s in range(0, len(valid), self.cfg.batch):
            idx = valid[s:s + self.cfg.batch]
            out[idx] = self.estimate([frames[i] for i in idx], boxes[idx])
        return out
