"""The clip stages with the real offline models (YOLO11n-pose, ISNet) on the real sample videos."""

from __future__ import annotations

import os

import numpy as np
import pytest

from anycharv.assets import asset_path
from anycharv.preprocessing.annotations import load_clip_annotations
from anycharv.preprocessing.config import PreprocessConfig
from anycharv.preprocessing.plan import plan_video
from anycharv.preprocessing.stages import PreviewStage, build_clip_stages, process_clip_plain, run_stages


def real_cfg(**over) -> PreprocessConfig:
    base = {"decode": {"short_side": 384}, "split": {"clip_len": 12, "stride": 12, "min_len": 12},
            "detect": {"device": "cpu"}, "mask": {"size": 384, "device": "cpu"}, "pose": {"device": "cpu"},
            "filter": {"people_rule": "main_dominant"}, "preview": {"num_frames": 3, "height": 160}}
    for k, v in over.items():
        base.setdefault(k, {}).update(v)
    return PreprocessConfig.model_validate(base)


def check_clip_outputs(task, min_frames_with_pose=0.75):
    """Plausibility checks every successful real clip must pass."""
    t = task.num_frames
    data = load_clip_annotations(task.work_dir, task.annotations)
    boxes, kps, masks = data["boxes"], data["keypoints"], data["masks"]
    assert boxes.shape == (t, 4) and boxes.dtype == np.float32
    assert masks.shape == (t, task.height, task.width) and masks.dtype == bool
    assert kps.shape == (t, task.stats["num_keypoints"], 3) and kps.dtype == np.float32
    assert task.track_id >= 0
    # tracked in every frame, boxes inside the frame and of a person-like shape
    assert not np.isnan(boxes).any()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= task.width).all() and (boxes[:, 3] <= task.height).all()
    assert ((boxes[:, 3] - boxes[:, 1]) > (boxes[:, 2] - boxes[:, 0]) * 0.8).all()
    # upright person: neck above the hips, nose above the neck, in most frames
    neck, nose = kps[:, 1], kps[:, 0]
    hips = kps[:, [8, 11]]
    seen = (neck[:, 2] > 0.3) & (hips[:, :, 2] > 0.3).all(1)
    assert seen.mean() >= min_frames_with_pose
    assert (neck[seen, 1] < hips[seen, :, 1].mean(1)).mean() >= 0.8
    nose_seen = seen & (nose[:, 2] > 0.3)
    assert (nose[nose_seen, 1] < hips[nose_seen, :, 1].mean(1)).mean() >= 0.8
    # keypoints lie in or near the box
    for f in np.flatnonzero(seen):
        x1, y1, x2, y2 = boxes[f]
        pad = 0.15 * (y2 - y1)
        for p in kps[f][kps[f, :, 2] > 0.5]:
            assert x1 - pad <= p[0] <= x2 + pad and y1 - pad <= p[1] <= y2 + pad
    # fine mask: mostly inside the box, a sensible share of it
    for f in range(t):
        x1, y1, x2, y2 = np.round(boxes[f]).astype(int)
        inside = masks[f, max(y1, 0):y2, max(x1, 0):x2].sum()
        assert inside >= 0.98 * masks[f].sum()
    assert 0.15 <= task.stats["mask_box_coverage"] <= 0.9
    assert task.stats["mask_outside_box"] <= 0.35
    return data


@pytest.fixture(scope="module")
def p2s_run(tmp_path_factory):
    cfg = real_cfg(split={"max_clips_per_video": 1})
    work = tmp_path_factory.mktemp("p2s")
    stages = build_clip_stages(cfg)
    tasks = process_clip_plain(str(asset_path("pose2sim_cam01.mp4")), cfg, str(work), stages)
    return cfg, tasks, stages


def test_portrait_video_through_all_stages(p2s_run):
    cfg, tasks, stages = p2s_run
    assert [s.name for s in stages] == ["detect_track", "filter_people", "fine_mask", "pose", "filter", "preview"]
    assert len(tasks) == 1
    task = tasks[0]
    assert task.ok, (task.reason, task.detail)
    assert (task.width, task.height) == (384, 704)
    data = check_clip_outputs(task)
    assert task.stats["keypoint_layout"] == "openpose18"
    assert task.stats["mean_kp_conf"] > 0.5
    assert set(task.annotations) == {"boxes", "person_counts", "detect_keypoints", "masks", "keypoints", "preview"}
    assert all(not os.path.isabs(v) for v in task.annotations.values())
    preview = data["preview"]
    assert preview.shape[0] == 160 and preview.shape[1] > 3 * 60
    for name in ("detect_track", "fine_mask", "pose"):
        assert task.stats[f"{name}_ms"] > 0
    # the operator in the background is there in every frame: the official rule rejects the clip
    assert task.stats["person_count_min"] == 2
    strict = real_cfg(split={"max_clips_per_video": 1}, filter={"people_rule": "exactly_one"})
    again = plan_video(str(asset_path("pose2sim_cam01.mp4")), strict, os.path.dirname(task.work_dir) + "-strict")
    again = run_stages(again, build_clip_stages(strict)[:2])
    assert (again[0].status, again[0].reason) == ("rejected", "multiple_people")


def test_landscape_video_one_walker_with_botsort(tmp_path):
    """sports2d frames 144-155: only the walker is in view, so the official one-person rule keeps it."""
    cfg = real_cfg(detect={"tracker": "botsort.yaml"}, filter={"people_rule": "exactly_one"},
                   preview={"enabled": False})
    tasks = plan_video(str(asset_path("sports2d_demo.mp4")), cfg, str(tmp_path))
    assert [(t.start_frame, t.end_frame) for t in tasks][:3] == [(0, 12), (12, 24), (24, 36)]
    task = next(t for t in tasks if t.start_frame == 144)
    assert (task.width, task.height) == (704, 384)
    stages = build_clip_stages(cfg)
    assert not any(isinstance(s, PreviewStage) for s in stages)
    [task] = run_stages([task], stages)
    assert task.ok, (task.reason, task.detail)
    assert task.stats["person_count_max"] == 1 and task.stats["person_count_min"] == 1
    boxes = np.load(os.path.join(task.work_dir, "boxes.npy"))
    assert boxes[:, 3].mean() > 384 * 0.7  # the walker's feet on the lawn
    check_clip_outputs(task)


def test_ultralytics_mask_backend_plumbing_with_a_random_seg_model(tmp_path):
    """No YOLO-seg weights exist offline: a random model built from the yaml (no download) only
    exercises shapes and the box intersection."""
    from anycharv.preprocessing.fine_mask import build_masker
    from anycharv.preprocessing.video_io import read_frames

    cfg = real_cfg(mask={"backend": "ultralytics", "weights": "yolo11n-seg.yaml", "conf": 0.0, "imgsz": 320})
    masker = build_masker(cfg.mask)
    frames = read_frames(str(asset_path("pose2sim_cam01.mp4")), 0, 2, (192, 320))
    boxes = np.array([[40, 60, 150, 300], [np.nan] * 4], np.float32)
    res = masker(frames, boxes)
    assert res.masks.shape == (2, 320, 192) and res.masks.dtype == bool
    assert not res.masks[1].any() and np.isnan(res.coverage[1])
    assert not res.masks[0, :, :40].any() and not res.masks[0, :60].any()
    assert 0.0 <= res.coverage[0] <= 1.0 and 0.0 <= res.outside[0] <= 1.0
    assert not list(tmp_path.glob("*.pt")) and not os.path.exists("yolo11n-seg.pt")
