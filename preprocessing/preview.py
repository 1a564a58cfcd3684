"""Per-clip preview strip: a few evenly spaced frames with the fine mask tinted, the track box and
the rendered pose drawn over them, side by side (for eyeballing a run and for Prefect artifacts)."""

from __future__ import annotations

import numpy as np

from anycharv.model.pose_render import render_pose

MASK_TINT = np.array([0, 160, 255], np.float32)


def preview_indices(num_frames: int, count: int) -> list[int]:
    return sorted(set(np.linspace(0, num_frames - 1, min(count, num_frames)).round().astype(int).tolist()))


def overlay(frame: np.ndarray, mask: np.ndarray | None, box: np.ndarray | None, keypoints: np.ndarray | None,
            layout: str, conf_threshold: float = 0.3) -> np.ndarray:
    import cv2

    img = frame.astype(np.float32)
    if mask is not None:
        img[mask] = img[mask] * 0.5 + MASK_TINT * 0.5
    img = img.clip(0, 255).astype(np.uint8)
    if keypoints is not None:
        pose = render_pose(keypoints, layout, frame.shape[0], frame.shape[1], conf_threshold)
        drawn = pose.any(-1)
        img[drawn] = pose[drawn]
    if box is not None and not np.isnan(box).any():
        x1, y1, x2, y2 = [int(round(v)) for v in box]
        cv2.rectangle(img, (x1, y1), (x2, y2), (255, 255, 0), max(1, frame.shape[0] // 256))
    return img


def preview_strip(frames: np.ndarray, indices: list[int], masks=None, boxes=None, keypoints=None,
                  layout: str = "openpose18", tile_height: int = 256, conf_threshold: float = 0.3) -> np.ndarray:
    """(tile_height, sum of tile widths, 3) uint8; ``frames``/``masks``/... are indexed by clip frame."""
    import cv2

    tiles = []
    for i in indices:
        tile = overlay(frames[i], None if masks is None else masks[i], None if boxes is None else boxes[i],
                       None if keypoints is None else keypoints[i], layout, conf_threshold)
        w = max(1, int(round(tile.shape[1] * tile_height / tile.shape[0])))
        tiles.append(cv2.resize(tile, (w, tile_height), interpolation=cv2.INTER_AREA))
    return np.concatenate(tiles, axis=1)
