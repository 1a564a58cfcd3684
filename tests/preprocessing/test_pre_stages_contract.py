"""The clip stages' declarations: class-level names and reservations, each stage built from its own
config section, the annotations each requires and produces (checked by the pipeline builder), the
keys of the new switches, and teardown() dropping the models setup() loaded."""

from __future__ import annotations

import gc
import weakref

import pytest

from anycharv.assets import asset_path
from anycharv.commands.preprocess import load_job
from anycharv.executor import check_order
from anycharv.preprocessing.config import PreprocessConfig
from anycharv.preprocessing.keys import section_payload
from anycharv.preprocessing.plan import plan_video
from anycharv.preprocessing.runner import stage_keys
from anycharv.preprocessing.stages import (
    GPU_SHARE,
    DetectTrackStage,
    FinalFilterStage,
    FineMaskStage,
    PeopleFilterStage,
    PoseFromDetectStage,
    PoseStage,
    PreviewStage,
    build_clip_stages,
    section_resources,
)

NAMES = ["detect_track", "filter_people", "fine_mask", "pose", "filter", "preview"]


def test_each_stage_is_built_from_its_own_section_and_declares_its_annotations():
    cfg = PreprocessConfig()
    stages = build_clip_stages(cfg)
    assert [s.name for s in stages] == NAMES
    assert [type(s) for s in stages] == [DetectTrackStage, PeopleFilterStage, FineMaskStage, PoseFromDetectStage,
                                         FinalFilterStage, PreviewStage]
    for stage, section in zip(stages, [cfg.detect, cfg.filter, cfg.mask, cfg.pose, cfg.filter, cfg.preview]):
        assert stage.cfg is section
        assert stage.cache_settings() == section_payload(section)
        assert type(stage).name == stage.name  # a class attribute, not set per instance
        assert "name" not in vars(stage)
    by_name = {s.name: s for s in stages}
    assert by_name["pose"].requires == ("boxes", "detect_keypoints")
    assert "detect_keypoints" in by_name["detect_track"].produces
    assert set(by_name["filter"].requires) >= {"masks", "keypoints"}
    assert by_name["preview"].produces == ("preview",)
    with pytest.raises(TypeError, match="DetectConfig"):
        DetectTrackStage(cfg)  # the whole config is refused: a stage reads only what its key covers


def test_the_builder_checks_the_order():
    cfg = PreprocessConfig()
    with pytest.raises(ValueError, match="fine_mask requires"):
        check_order([FineMaskStage(cfg.mask), DetectTrackStage(cfg.detect)])
    with pytest.raises(ValueError, match="pose requires"):  # reuse without the detector that keeps the keypoints
        check_order([PoseFromDetectStage(cfg.pose)], available=("boxes",))
    check_order([PoseStage(cfg.pose)], available=("boxes",))


def test_the_class_declares_the_reservation_and_the_section_resolves_the_gpu_share():
    cfg = PreprocessConfig.model_validate({"detect": {"gpus": 0.5}, "mask": {"device": "cpu"}})
    assert DetectTrackStage.resources.gpus == GPU_SHARE and DetectTrackStage.resources.cpus == 1.0
    assert DetectTrackStage(cfg.detect).resources.gpus == 0.5
    assert FineMaskStage(cfg.mask).resources.gpus == 0.0
    assert DetectTrackStage.resources.gpus == GPU_SHARE  # resolving never changes the declaration
    assert section_resources(FineMaskStage.resources, cfg.mask.model_copy(update={"gpus": 1.0})).gpus == 1.0
    # stages that declare no GPU keep the class attribute itself
    assert PeopleFilterStage(cfg.filter).resources is PeopleFilterStage.resources
    assert PoseFromDetectStage(cfg.pose).resources.gpus == 0.0


BASE = ["decode.short_side=256", "split.clip_len=8", "split.min_len=8", "split.max_clips_per_video=1"]


def _keys(*overrides: str) -> dict[str, str]:
    cfg = load_job(None, [*BASE, *overrides]).stage_config()
    task = plan_video(str(asset_path("pose2sim_cam01.mp4")), cfg, "/tmp/unused")[0]
    stages = build_clip_stages(cfg)
    return dict(zip([s.name for s in stages], stage_keys(task, stages, [s.cache_settings() for s in stages])))


def test_the_speed_switches_key_only_the_stages_whose_output_they_change():
    base = _keys()

    def changed(*overrides):
        other = _keys(*overrides)
        return sorted(name for name in base if other[name] != base[name])

    assert changed("pose.reuse_detect=false") == ["filter", "pose", "preview"]
    assert changed("mask.fit_crop=true") == ["filter", "fine_mask", "preview"]
    assert changed("detect.keypoints=false") == sorted(base)  # detect+track writes other files


def test_teardown_drops_the_models_and_the_stage_sets_up_again():
    cfg = PreprocessConfig.model_validate({"detect": {"device": "cpu"}, "mask": {"size": 256, "device": "cpu"}})
    for stage, attr in ((DetectTrackStage(cfg.detect), "tracker"), (FineMaskStage(cfg.mask), "masker")):
        assert getattr(stage, attr) is None  # nothing loads before setup()
        stage.ensure_setup()
        model = weakref.ref(getattr(stage, attr))
        stage.teardown()
        gc.collect()
        assert getattr(stage, attr) is None and model() is None  # nothing else kept it alive
        stage.ensure_setup()
        assert getattr(stage, attr) is not None
        stage.teardown()
