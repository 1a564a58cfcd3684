"""Body pose with an Ultralytics YOLO pose checkpoint (COCO-17, mapped to OpenPose-18).

The model finds every person; the main character is the detection with the best IoU to its track
box in that frame (none below ``MIN_IOU``: a missing pose is better than someone else's)."""

from __future__ import annotations

import numpy as np

from anycharv.devices import pick_device
from anycharv.preprocessing.config import PoseConfig
from anycharv.preprocessing.detect_track import box_iou, load_ultralytics, ultralytics_predict
from anycharv.preprocessing.pose import coco_to_openpose

MIN_IOU = 0.3


class UltralyticsPoseEstimator:
    layout = "openpose18"

    def __init__(self, cfg: PoseConfig):
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.model = load_ultralytics(cfg.weights)

    def __call__(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        t = len(frames)
        out = np.zeros((t, 18, 3), np.float32)
        for s in range(0, t, self.cfg.batch):
            chunk = [np.ascontiguousarray(f[..., ::-1]) for f in frames[s:s + self.cfg.batch]]
            results = ultralytics_predict(self.model, chunk, imgsz=self.cfg.imgsz, conf=self.cfg.conf, classes=[0],
                                         device=str(self.device), verbose=False)
            for j, res in enumerate(results):
                i = s + j
                if np.isnan(boxes[i]).any() or res.keypoints is None or res.boxes is None or not len(res.boxes):
                    continue
                iou = box_iou(res.boxes.xyxy.cpu().numpy(), boxes[i])[:, 0]
                best = int(np.argmax(iou))
                if iou[best] < MIN_IOU:
                    continue
                kp = res.keypoints.data[best].cpu().numpy().astype(np.float32)  # (17, 3) x, y, conf
                if kp.shape[-1] == 2:  # a checkpoint without visibility scores
                    kp = np.concatenate([kp, np.ones_like(kp[:, :1])], -1)
                out[i] = coco_to_openpose(kp)
        return out
