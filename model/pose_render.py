"""OpenPose-style pose images (what the pose guider consumes): coloured body limbs and joints on
black, plus hands (rainbow edges, blue joints) and face (white dots) when the layout has them.

Colours follow the usual OpenPose/ControlNet convention (RGB): 18 joint colours running around
the hue circle, limb ``i`` drawn in colour ``i`` at 60% intensity."""

from __future__ import annotations

import colorsys
import math

import numpy as np

# Parts of the ``dwpose134`` keypoint layout (``openpose18`` is its first 18 points); the layouts
# are described in ``anycharv.preprocessing.pose``.
BODY = slice(0, 18)
FACE = slice(24, 92)
LEFT_HAND = slice(92, 113)
RIGHT_HAND = slice(113, 134)

JOINT_COLORS = [
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
]
# OpenPose-18 limbs (0-based joint pairs), in the conventional drawing order.
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
         (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17)]
HAND_EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11),
              (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20)]


def _visible(kp: np.ndarray, thr: float, h: int, w: int) -> np.ndarray:
    x, y = kp[:, 0], kp[:, 1]
    return (kp[:, 2] >= thr) & np.isfinite(kp[:, :2]).all(-1) & (x >= 0) & (y >= 0) & (x < w) & (y < h)


def _draw_body(canvas: np.ndarray, kp: np.ndarray, vis: np.ndarray, stick: int) -> None:
    import cv2

    for i, (a, b) in enumerate(LIMBS):
        if not (vis[a] and vis[b]):
            continue
        (xa, ya), (xb, yb) = kp[a, :2], kp[b, :2]
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        poly = cv2.ellipse2Poly((int((xa + xb) / 2), int((ya + yb) / 2)), (int(length / 2), stick), int(angle),
                                0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, tuple(int(c * 0.6) for c in JOINT_COLORS[i]))
    for j in range(min(18, len(kp))):
        if vis[j]:
            cv2.circle(canvas, (int(kp[j, 0]), int(kp[j, 1])), stick, JOINT_COLORS[j], thickness=-1)


def _draw_hand(canvas: np.ndarray, kp: np.ndarray, vis: np.ndarray, thickness: int) -> None:
    import cv2

    for e, (a, b) in enumerate(HAND_EDGES):
        if vis[a] and vis[b]:
            r, g, bl = colorsys.hsv_to_rgb(e / len(HAND_EDGES), 1.0, 1.0)
            cv2.line(canvas, (int(kp[a, 0]), int(kp[a, 1])), (int(kp[b, 0]), int(kp[b, 1])),
                     (int(r * 255), int(g * 255), int(bl * 255)), thickness)
    for j in range(len(kp)):
        if vis[j]:
            cv2.circle(canvas, (int(kp[j, 0]), int(kp[j, 1])), thickness + 1, (0, 0, 255), thickness=-1)


def render_pose(keypoints: np.ndarray, layout: str, height: int, width: int,
                conf_threshold: float = 0.3) -> np.ndarray:
    """Pose image (H, W, 3) uint8 RGB of one person's keypoints (K, 3) in pixel coordinates."""
    kp = np.asarray(keypoints, np.float32)
    canvas = np.zeros((height, width, 3), np.uint8)
    if kp.size == 0:
        return canvas
    stick = max(2, int(round(4 * min(height, width) / 512)))
    vis = _visible(kp, conf_threshold, height, width)
    _draw_body(canvas, kp[BODY], vis[BODY], stick)
    if layout == "dwpose134" and len(kp) >= 134:
        import cv2

        thin = max(1, stick // 2)
        for part in (LEFT_HAND, RIGHT_HAND):
            _draw_hand(canvas, kp[part], vis[part], thin)
        for j in np.flatnonzero(vis[FACE]):
            x, y = kp[FACE][j, :2]
            cv2.circle(canvas, (int(x), int(y)), thin, (255, 255, 255), thickness=-1)
    return canvas


def render_pose_sequence(keypoints: np.ndarray, layout: str, height: int, width: int,
                         conf_threshold: float = 0.3) -> np.ndarray:
    """(T, K, 3) -> (T, H, W, 3) uint8."""
    return np.stack([render_pose(k, layout, height, width, conf_threshold) for k in keypoints])
