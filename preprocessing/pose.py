"""Pose of the main character: keypoint layouts shared by the backends, and the backend factory.

Layouts (``stats["keypoint_layout"]``), all starting with the 18 OpenPose body points so the body
part of every layout renders the same way:
- ``openpose18``: nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist, r-hip,
  r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear.
- ``dwpose134``: ``openpose18`` + 6 feet + 68 face + 21 left hand + 21 right hand (DWPose's 133
  COCO-WholeBody points with the neck added).

Reuse (``reuses_detect``): the default detector *is* the default pose model (``yolo11n-pose``), so
when both run it with the same settings, detect+track's kept keypoints are exactly what the
``ultralytics-pose`` pass would find, and the pose stage maps them instead of running it again.
"""

from __future__ import annotations

import numpy as np

from anycharv.model.pose_render import BODY

# OpenPose-18 body index -> COCO-17 index (neck, index 1, is the shoulder midpoint).
OPENPOSE_FROM_COCO = [0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
LAYOUTS = {"openpose18": 18, "dwpose134": 134}


def coco_to_openpose(coco: np.ndarray) -> np.ndarray:
    """(..., 17, 3) COCO body keypoints -> (..., 18, 3) OpenPose order with the neck added as the
    shoulder midpoint (its score is the lower shoulder score)."""
    coco = np.asarray(coco, np.float32)
    out = np.zeros(coco.shape[:-2] + (18, 3), np.float32)
    for op, c in enumerate(OPENPOSE_FROM_COCO):
        if c >= 0:
            out[..., op, :] = coco[..., c, :]
    ls, rs = coco[..., 5, :], coco[..., 6, :]
    out[..., 1, :2] = (ls[..., :2] + rs[..., :2]) / 2
    out[..., 1, 2] = np.minimum(ls[..., 2], rs[..., 2])
    return out


def wholebody_to_dwpose134(kps: np.ndarray) -> np.ndarray:
    """(..., 133, 3) COCO-WholeBody -> (..., 134, 3) ``dwpose134``."""
    kps = np.asarray(kps, np.float32)
    return np.concatenate([coco_to_openpose(kps[..., :17, :]), kps[..., 17:, :]], axis=-2)


# The NMS IoU of the ``ultralytics-pose`` pass: it calls ``predict`` without one, so Ultralytics'
# own default applies (a test checks the two agree).
POSE_PASS_NMS_IOU = 0.7


def reuses_detect(detect, pose) -> bool:
    """Whether the pose stage may take detect+track's keypoints (``DetectConfig``, ``PoseConfig``):
    both switches on (``detect.keypoints``, ``pose.reuse_detect``), the ``ultralytics-pose``
    backend, the same weights (by content, so a copied checkpoint counts), imgsz and confidence, and
    the detector's NMS IoU equal to the pose pass's: then both see the same detections. Devices and
    batch sizes are not compared: they decide where a pass runs, not what it finds (the same batch
    gives bit-equal keypoints; see tests/preprocessing/test_pre_stages_reuse.py)."""
    if not (detect.keypoints and pose.reuse_detect and pose.backend == "ultralytics-pose"):
        return False
    if (detect.imgsz, detect.conf, detect.iou) != (pose.imgsz, pose.conf, POSE_PASS_NMS_IOU):
        return False
    if pose.weights.endswith((".yaml", ".yml")):  # a model yaml is random init: two loads, two models
        return False
    from anycharv.preprocessing.keys import weights_identity

    return weights_identity(detect.weights) == weights_identity(pose.weights)


def keypoints_from_detect(coco: np.ndarray) -> np.ndarray:
    """(T, 17, 3) COCO keypoints kept by detect+track -> (T, 18, 3) ``openpose18``; frames without
    a match are all zero there and stay so, as in the pose pass."""
    coco = np.asarray(coco, np.float32)
    if coco.ndim != 3 or coco.shape[1:] != (17, 3):
        raise ValueError(f"detect keypoints: expected (T, 17, 3), got {coco.shape}")
    return coco_to_openpose(coco)


def body_confidence(keypoints: np.ndarray) -> float:
    """Mean score of the 18 body points over the frames where the person has any keypoint."""
    body = np.asarray(keypoints)[..., BODY, 2]
    seen = body.max(axis=-1) > 0
    return float(body[seen].mean()) if seen.any() else 0.0


def build_pose_estimator(cfg):
    """The configured backend; each has ``layout`` and ``__call__(frames, boxes) -> (T, K, 3)``."""
    if cfg.backend == "dwpose":
        from anycharv.preprocessing.pose_dwpose import DWPoseEstimator

        return DWPoseEstimator(cfg)
    from anycharv.preprocessing.pose_ultralytics import UltralyticsPoseEstimator

    return UltralyticsPoseEstimator(cfg)
