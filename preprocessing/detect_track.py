"""Person detection (any Ultralytics detect/pose/seg model, class 0 only) plus Ultralytics' own
ByteTrack / BoT-SORT, and the choice of the main character among the tracks.

Detection runs batched with ``predict``; the tracker is fed frame by frame with those detections
(the same thing ``model.track`` does, but we also keep the raw per-frame person count that the
one-person rule needs, which ``track`` drops for unconfirmed detections).

With a pose model (the default ``yolo11n-pose``) the detections already carry COCO-17 keypoints;
``track`` keeps those of the main character (``TrackResult.keypoints``), picked per frame exactly
as the ``ultralytics-pose`` backend picks them (``match_keypoints``), so the pose stage can reuse
them instead of running the same model on the same frames a second time.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from anycharv.devices import pick_device
from anycharv.preprocessing.config import DetectConfig, resolve_weights


@dataclass
class TrackResult:
    boxes: np.ndarray  # (T, 4) float32 xyxy, NaN where the main track is missing
    person_counts: np.ndarray  # (T,) int16
    track_id: int  # -1 when no track
    other_ratio: np.ndarray  # (T,) float32 largest other person's area / main area (0 if none)
    track_lengths: dict[int, int] = field(default_factory=dict)
    keypoints: np.ndarray | None = None  # (T, 17, 3) COCO x, y, score of the main character (pose models only)


def load_ultralytics(weights: str, cls_name: str = "YOLO"):
    """An Ultralytics model from a checkpoint path, an asset name or a model yaml (random init).

    Checkpoints are read with ``torch.load(weights_only=True)`` (Ultralytics' opt-in safe loader with
    its allow-list of model classes), never by unpickling arbitrary objects."""
    import ultralytics
    import ultralytics.nn.tasks as tasks

    path = resolve_weights(weights)
    previous = tasks.SAFE_LOAD
    tasks.SAFE_LOAD = True
    try:
        return getattr(ultralytics, cls_name)(path)
    finally:
        tasks.SAFE_LOAD = previous


@contextmanager
def keep_torch_threads():
    """Ultralytics' device selection calls ``torch.set_num_threads(cpu_count - 1)`` for the whole
    process; restore the caller's setting so later torch work (e.g. the diffusion pipeline in the same
    process) keeps its cores, and so parity-sensitive numerics do not depend on call order."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def ultralytics_predict(model, source, **kwargs) -> list:
    """``model.predict`` without Ultralytics' process-wide thread-count side effect."""
    with keep_torch_threads():
        return model.predict(source, **kwargs)


def make_tracker(name: str):
    from ultralytics.trackers.track import TRACKER_MAP
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    cfg = IterableSimpleNamespace(**YAML.load(check_yaml(name)))
    if getattr(cfg, "with_reid", False):
        cfg.with_reid = False  # ReID would need extra weights (a download)
    return TRACKER_MAP[cfg.tracker_type](args=cfg)


def box_area(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float32)
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (N, M) of xyxy boxes."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def choose_main_track(tracks: dict[int, dict[int, np.ndarray]], rule: str) -> int:
    """Track id of the main character: ``longest_then_largest`` (most frames, then largest mean
    area), ``longest`` (same) or ``largest`` (largest mean area, then most frames)."""
    if not tracks:
        return -1
    def key(tid):
        frames = tracks[tid]
        area = float(np.mean([box_area(b) for b in frames.values()]))
        return (area, len(frames)) if rule == "largest" else (len(frames), area)
    return max(tracks, key=key)


def match_keypoints(result, box: np.ndarray) -> np.ndarray | None:
    """COCO-17 keypoints (17, 3) of the detection in one Ultralytics pose ``result`` that best
    overlaps ``box`` (xyxy), or None: no box, no detection, or none with IoU >= the pose backend's
    ``MIN_IOU``. The same rule, step by step, as ``UltralyticsPoseEstimator`` (the reused keypoints
    must be the ones a separate pose pass gives)."""
    from anycharv.preprocessing.pose_ultralytics import MIN_IOU  # one threshold for both

    if np.isnan(box).any() or result.keypoints is None or result.boxes is None or not len(result.boxes):
        return None
    iou = box_iou(result.boxes.xyxy.cpu().numpy(), box)[:, 0]
    best = int(np.argmax(iou))
    if iou[best] < MIN_IOU:
        return None
    kp = result.keypoints.data[best].cpu().numpy().astype(np.float32)  # (17, 3) x, y, conf
    if kp.shape[-1] == 2:  # a checkpoint without visibility scores
        kp = np.concatenate([kp, np.ones_like(kp[:, :1])], -1)
    return kp


class PersonTracker:
    """Loads the detector once; ``track(frames)`` runs one clip with a fresh tracker."""

    def __init__(self, cfg: DetectConfig):
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.model = load_ultralytics(cfg.weights)

    @property
    def keeps_keypoints(self) -> bool:
        """Whether ``track`` returns the main character's keypoints (a pose model, and asked to)."""
        return bool(self.cfg.keypoints) and getattr(self.model, "task", None) == "pose"

    def detect(self, frames_rgb: np.ndarray) -> list:
        out = []
        for i in range(0, len(frames_rgb), self.cfg.batch):
            chunk = [np.ascontiguousarray(f[..., ::-1]) for f in frames_rgb[i:i + self.cfg.batch]]  # BGR
            out.extend(ultralytics_predict(self.model, chunk, imgsz=self.cfg.imgsz, conf=self.cfg.conf,
                                           iou=self.cfg.iou, classes=[0], device=str(self.device), verbose=False))
        return out

    def track(self, frames_rgb: np.ndarray) -> TrackResult:
        t, h, w = frames_rgb.shape[:3]
        tracker = make_tracker(self.cfg.tracker)
        results = self.detect(frames_rgb)
        tracks: dict[int, dict[int, np.ndarray]] = {}
        counts = np.zeros(t, np.int16)
        counted_boxes: list[np.ndarray] = []
        for i, res in enumerate(results):
            boxes = res.boxes.cpu().numpy()
            xyxy = boxes.xyxy.astype(np.float32).reshape(-1, 4)
            keep = (boxes.conf >= self.cfg.count_conf) & (box_area(xyxy) >= self.cfg.count_min_area * h * w)
            counts[i] = int(keep.sum())
            counted_boxes.append(xyxy[keep])
            if len(boxes):
                out = tracker.update(boxes, np.ascontiguousarray(frames_rgb[i][..., ::-1]))
            else:
                out = tracker.update(boxes)
            for row in np.asarray(out).reshape(-1, 8):
                tracks.setdefault(int(row[4]), {})[i] = row[:4].astype(np.float32)
        main = choose_main_track(tracks, self.cfg.main_person)
        main_boxes = np.full((t, 4), np.nan, np.float32)
        other = np.zeros(t, np.float32)
        if main >= 0:
            for i, b in tracks[main].items():
                main_boxes[i] = np.clip(b, 0, [w, h, w, h])
            for i in range(t):
                if np.isnan(main_boxes[i, 0]) or not len(counted_boxes[i]):
                    continue
                others = counted_boxes[i][box_iou(counted_boxes[i], main_boxes[i])[:, 0] < 0.5]
                if len(others):
                    other[i] = float(box_area(others).max() / max(box_area(main_boxes[i]), 1e-6))
        keypoints = None
        if self.keeps_keypoints:
            keypoints = np.zeros((t, 17, 3), np.float32)
            for i, res in enumerate(results):
                kp = match_keypoints(res, main_boxes[i])
                if kp is not None:
                    keypoints[i] = kp
        return TrackResult(main_boxes, counts, main, other, {k: len(v) for k, v in tracks.items()}, keypoints)
