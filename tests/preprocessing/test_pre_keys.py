"""What enters clip ids and stage keys: what changes the annotations, never how or where a job
runs (devices, GPU shares, workers, batch sizes) nor the preview, and weights by content."""

from __future__ import annotations

import shutil

import pytest

from anycharv.assets import asset_path
from anycharv.commands.preprocess import load_job
from anycharv.preprocessing.keys import content_hash
from anycharv.preprocessing.plan import plan_video
from anycharv.preprocessing.runner import stage_keys
from anycharv.preprocessing.stages import build_clip_stages

BASE = ["decode.short_side=256", "split.clip_len=8", "split.min_len=8", "split.max_clips_per_video=2"]
NOT_CONTENT = ["detect.gpus=0.5", "runtime.device=cuda:0", "preview.height=300", "preview.num_frames=8",
               "detect.batch=2", "pose.batch=3", "mask.gpus=0.25", "mask.engine=onnxruntime", "pose.device=cpu",
               "runtime.num_workers=3",
               "runtime.batch_size=4", "runtime.stage_workers.pose=2"]


def _hash(*overrides: str) -> str:
    return load_job(None, [*BASE, *overrides]).content_hash()


@pytest.mark.parametrize("override", NOT_CONTENT)
def test_execution_and_preview_settings_keep_the_config_hash(override):
    assert _hash(override) == _hash()


@pytest.mark.parametrize("override", ["detect.conf=0.3", "mask.threshold=0.6", "pose.imgsz=320",
                                      "filter.min_box_area=0.02", "decode.short_side=320", "split.stride=12"])
def test_content_settings_change_the_config_hash(override):
    assert _hash(override) != _hash()


def test_weights_enter_by_content_not_by_path(tmp_path):
    cached = asset_path("yolo11n-pose.pt")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copy(cached, tmp_path / name / "yolo.pt")
    by_name = _hash()  # the default names the offline asset
    a, b = tmp_path / "a" / "yolo.pt", tmp_path / "b" / "yolo.pt"
    assert _hash(f"detect.weights={a}") == _hash(f"detect.weights={b}")
    assert _hash(f"detect.weights={cached}") == by_name
    changed = bytearray(cached.read_bytes())
    changed[-1] ^= 1
    (tmp_path / "c.pt").write_bytes(bytes(changed))
    assert _hash(f"detect.weights={tmp_path / 'c.pt'}") != by_name


def test_clip_ids_do_not_move_between_a_cpu_laptop_and_a_gpu_cluster(tmp_path):
    video = str(asset_path("pose2sim_cam01.mp4"))
    laptop = load_job(None, [*BASE, "runtime.device=cpu"]).stage_config()
    cluster = load_job(None, [*BASE, "runtime.device=cuda:0", "detect.gpus=0.5", "preview.height=300"]).stage_config()
    ids = [[t.clip_id for t in plan_video(video, cfg, str(tmp_path))] for cfg in (laptop, cluster)]
    assert ids[0] == ids[1] and len(ids[0]) == 2
    assert content_hash(laptop) == content_hash(cluster)


def _keys(*overrides: str) -> dict[str, str]:
    cfg = load_job(None, [*BASE, *overrides]).stage_config()
    task = plan_video(str(asset_path("pose2sim_cam01.mp4")), cfg, "/tmp/unused")[0]
    stages = build_clip_stages(cfg)
    return dict(zip([s.name for s in stages], stage_keys(task, stages, [s.cache_settings() for s in stages])))


def test_stage_keys_follow_what_each_stage_reads():
    base = _keys()
    assert all(base.values()) and len(set(base.values())) == len(base)

    def changed(*overrides):
        other = _keys(*overrides)
        return sorted(name for name in base if other[name] != base[name])

    assert changed("filter.min_box_area=0.02") == ["filter", "filter_people"]
    assert changed("mask.threshold=0.6") == ["filter", "fine_mask", "preview"]  # not detection, not pose
    assert changed("pose.imgsz=320") == ["filter", "pose", "preview"]
    assert changed("detect.conf=0.3") == sorted(base)  # everything reads the boxes
    assert changed("preview.height=300") == ["preview"]
    assert changed("detect.gpus=0.5", "runtime.device=cuda:0", "pose.batch=3", "mask.engine=onnxruntime") == []
