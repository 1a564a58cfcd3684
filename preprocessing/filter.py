"""Which clips are kept. Every rejection carries a reason code (recorded in the manifest):

``no_person``            no main track, or it is in fewer than ``min_presence`` of the frames
``multiple_people``      ``exactly_one``: some frame has more than one person;
                         ``main_dominant``: another person is at least ``dominant_ratio`` x the main one
``box_too_small``        mean main box area or height below the minimum
``low_pose_confidence``  mean body keypoint score below ``min_kp_conf``
``mask_empty``           mean fine mask share of the box below ``min_mask_coverage``
``mask_outside_box``     too much of the raw foreground lies outside the box (mask and box disagree)

``check_people`` needs only the detect stage's output (so it can run early, before the expensive
stages); ``check_clip`` runs everything that is available.
"""

from __future__ import annotations

import numpy as np

from anycharv.preprocessing.config import FilterConfig


def check_people(boxes: np.ndarray, person_counts: np.ndarray, other_ratio_max: float, width: int, height: int,
                 cfg: FilterConfig) -> tuple[str, str] | None:
    """(reason, detail) when the clip fails a person/box rule, else None."""
    t = len(boxes)
    present = ~np.isnan(boxes).any(axis=1)
    presence = float(present.mean()) if t else 0.0
    if not present.any() or presence < cfg.min_presence:
        return "no_person", f"main person in {present.sum()}/{t} frames (min share {cfg.min_presence})"
    counts = np.asarray(person_counts)
    if cfg.people_rule == "exactly_one" and (counts != 1).any():
        bad = int(np.flatnonzero(counts != 1)[0])
        if counts.max() > 1:
            return "multiple_people", f"{int(counts.max())} people in a frame (first bad frame {bad})"
        return "no_person", f"no confident person in frame {bad}"
    if cfg.people_rule == "main_dominant" and other_ratio_max >= cfg.dominant_ratio:
        return "multiple_people", f"another person is {other_ratio_max:.2f} x the main one (max {cfg.dominant_ratio})"
    b = boxes[present]
    area = float(np.mean((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))) / (width * height)
    box_h = float(np.mean(b[:, 3] - b[:, 1])) / height
    if area < cfg.min_box_area or box_h < cfg.min_box_height:
        return "box_too_small", (f"mean box area {area:.4f} of the frame, height {box_h:.3f} "
                                 f"(min {cfg.min_box_area}, {cfg.min_box_height})")
    return None


def check_clip(stats: dict, cfg: FilterConfig) -> tuple[str, str] | None:
    """Pose and mask rules on the stats the stages recorded (rules whose stats are absent are skipped)."""
    kp = stats.get("mean_kp_conf")
    if kp is not None and kp < cfg.min_kp_conf:
        return "low_pose_confidence", f"mean body keypoint score {kp:.3f} < {cfg.min_kp_conf}"
    cov = stats.get("mask_box_coverage")
    if cov is not None and cov < cfg.min_mask_coverage:
        return "mask_empty", f"mask covers {cov:.3f} of the box < {cfg.min_mask_coverage}"
    out = stats.get("mask_outside_box")
    if out is not None and out > cfg.max_mask_outside:
        return "mask_outside_box", f"{out:.3f} of the foreground lies outside the box > {cfg.max_mask_outside}"
    return None
