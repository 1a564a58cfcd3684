"""Keypoint reuse: when detect+track ran the pose model itself (the default ``yolo11n-pose``) with
the pose stage's settings, the pose stage maps detect+track's keypoints instead of a second pass.
Checked on real clips with the real model against a separate pass, and by what setup() loads."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from anycharv.assets import asset_path
from anycharv.preprocessing.annotations import load_clip_annotations
from anycharv.preprocessing.config import PreprocessConfig
from anycharv.preprocessing.plan import plan_video
from anycharv.preprocessing.pose import POSE_PASS_NMS_IOU, reuses_detect
from anycharv.preprocessing.stages import (
    DetectTrackStage,
    PoseFromDetectStage,
    PoseStage,
    build_clip_stages,
    pose_stage,
    run_stages,
)


def cfg_with(**over) -> PreprocessConfig:
    base = {"decode": {"short_side": 320}, "split": {"clip_len": 12, "stride": 48, "min_len": 12,
                                                      "max_clips_per_video": 2},
            "detect": {"imgsz": 416, "device": "cpu"}, "pose": {"imgsz": 416, "device": "cpu"}}
    for k, v in over.items():
        base.setdefault(k, {}).update(v)
    return PreprocessConfig.model_validate(base)


def _count_yolo_models() -> int:
    from ultralytics import YOLO

    gc.collect()
    return sum(issubclass(type(o), YOLO) for o in gc.get_objects())  # type(): no __class__ lookups


@pytest.fixture(scope="module")
def detected(tmp_path_factory):
    """Two clips of each sample video through detect+track (pose2sim has a second person, the
    operator, in every frame: the keypoints must be the main character's)."""
    cfg = cfg_with()
    detect = DetectTrackStage(cfg.detect)
    tasks = []
    for video in ("pose2sim_cam01.mp4", "sports2d_demo.mp4"):
        tasks += plan_video(str(asset_path(video)), cfg, str(tmp_path_factory.mktemp(video.split(".")[0])))
    tasks = run_stages(tasks, [detect])
    detect.teardown()
    assert len(tasks) == 4 and all(t.ok for t in tasks), [(t.reason, t.detail) for t in tasks]
    return cfg, tasks


def _copy(task):
    return type(task).from_dict(task.to_dict())


def test_reused_keypoints_equal_a_separate_pose_pass_exactly(detected):
    """Exact equality, no tolerance: the same model, weights, frames, batch size and settings give
    bit-equal detections, and both sides pick the main character's detection by the same rule
    (``detect_track.match_keypoints``); the mapping to OpenPose-18 is the same function."""
    cfg, tasks = detected
    separate, reused = PoseStage(cfg.pose), PoseFromDetectStage(cfg.pose)
    two_people = 0
    for task in tasks:
        [a] = separate.process_batch([_copy(task)])
        [b] = reused.process_batch([_copy(task)])
        assert a.ok and b.ok, (a.detail, b.detail)
        ka = load_clip_annotations(a.work_dir, {"k": a.annotations["keypoints"]})["k"]
        kb = load_clip_annotations(b.work_dir, {"k": b.annotations["keypoints"]})["k"]
        assert ka.shape == kb.shape == (task.num_frames, 18, 3)
        assert (ka[:, :, 2] > 0).mean() > 0.5  # a real pose, not an all-zero array on both sides
        np.testing.assert_array_equal(ka, kb)
        for key in ("keypoint_layout", "num_keypoints", "mean_kp_conf", "pose_device"):
            assert a.stats[key] == b.stats[key], key
        two_people += task.stats["person_count_max"] >= 2
    assert two_people >= 1  # the rule that picks the main character among several people was exercised
    separate.teardown()


def test_the_pose_model_is_not_loaded_when_reuse_applies():
    cfg = cfg_with()
    [stage] = [s for s in build_clip_stages(cfg) if s.name == "pose"]
    assert isinstance(stage, PoseFromDetectStage)
    before, attrs = _count_yolo_models(), dict(vars(stage))
    stage.ensure_setup()
    assert _count_yolo_models() == before
    assert {k: v for k, v in vars(stage).items() if k != "_ready"} == {k: v for k, v in attrs.items() if k != "_ready"}
    assert getattr(stage, "estimator", None) is None
    # the control: the model pass does build one
    separate = PoseStage(cfg.pose)
    separate.ensure_setup()
    assert separate.estimator is not None and _count_yolo_models() == before + 1
    separate.teardown()


@pytest.mark.parametrize("override, reuse", [
    ({}, True),
    ({"pose": {"batch": 3, "device": "auto", "gpus": 0.5}}, True),  # execution settings do not matter
    ({"pose": {"imgsz": 320}}, False),
    ({"pose": {"conf": 0.3}}, False),
    ({"detect": {"iou": 0.6}}, False),
    ({"pose": {"reuse_detect": False}}, False),
    ({"detect": {"keypoints": False}}, False),
    ({"detect": {"weights": "yolo11n-pose.yaml"}, "pose": {"weights": "yolo11n-pose.yaml"}}, False),  # random init
])
def test_reuse_applies_only_where_both_passes_see_the_same_detections(override, reuse):
    cfg = cfg_with(**override)
    assert reuses_detect(cfg.detect, cfg.pose) is reuse
    assert isinstance(pose_stage(cfg.detect, cfg.pose), PoseFromDetectStage) is reuse


def test_the_weights_count_by_content(tmp_path):
    import shutil

    copy = tmp_path / "pose.pt"
    shutil.copy(asset_path("yolo11n-pose.pt"), copy)
    cfg = cfg_with(pose={"weights": str(copy)})
    assert reuses_detect(cfg.detect, cfg.pose)
    changed = bytearray(copy.read_bytes())
    changed[-1] ^= 1
    (tmp_path / "other.pt").write_bytes(bytes(changed))
    cfg = cfg_with(pose={"weights": str(tmp_path / "other.pt")})
    assert not reuses_detect(cfg.detect, cfg.pose)


def test_the_pose_pass_nms_iou_is_ultralytics_default():
    """The ultralytics-pose backend calls predict without an IoU: reuse compares against this default."""
    from ultralytics.cfg import get_cfg

    assert get_cfg().iou == POSE_PASS_NMS_IOU


def test_missing_detect_keypoints_are_a_clear_error(detected):
    cfg, tasks = detected
    task = _copy(tasks[0])
    del task.annotations["detect_keypoints"]
    [out] = PoseFromDetectStage(cfg.pose).process_batch([task])
    assert out.reason == "stage_error" and "kept no keypoints" in out.detail
