"""The clip stages as ``Stage`` subclasses, plus a plain-Python loop over them.

Pipeline order (``build_clip_stages``): detect+track -> people filter (cheap, before the expensive
stages) -> fine mask -> pose -> final filter -> preview. Every stage re-reads its frames from the
source (``ClipTask`` carries paths only), writes its files into ``task.work_dir`` (see
``annotations.py``), records them in ``task.annotations`` and plain-number stats in ``task.stats``
(including ``<stage>_ms``, its wall time for the clip).

Each stage is built from its own config section (``DetectConfig``, ``MaskConfig``, ...), never
from the whole ``PreprocessConfig``: its cache key is made of that section (``cache_settings``) and
of the stages it reads (``depends_on``), so a stage that could read any section could depend on a
setting its key does not cover. Each declares the annotations it ``requires`` and ``produces``;
``build_clip_stages`` checks the order (``anycharv.executor.check_order``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, ClassVar

import numpy as np

from anycharv.errors import InputError
from anycharv.executor.stage import Stage, StageResources, check_order
from anycharv.preprocessing import annotations as ann
from anycharv.preprocessing.config import (
    DetectConfig,
    FilterConfig,
    MaskConfig,
    PoseConfig,
    PreprocessConfig,
    PreviewConfig,
)
from anycharv.preprocessing.filter import check_clip, check_people
from anycharv.preprocessing.records import ClipTask
from anycharv.preprocessing.video_io import read_frames

# The GPU share one worker of a model stage asks for on a CUDA machine (its class declaration).
GPU_SHARE = 0.25


def clip_frames(task: ClipTask) -> np.ndarray:
    return read_frames(task.source, task.start_frame, task.end_frame, (task.width, task.height))


def load_boxes(task: ClipTask) -> np.ndarray:
    return load_annotation(task, "boxes")


def load_annotation(task: ClipTask, name: str) -> np.ndarray:
    if name not in task.annotations:
        raise KeyError(f"clip {task.clip_id} has no {name!r} annotation (have {sorted(task.annotations)})")
    return np.load(os.path.join(task.work_dir, task.annotations[name]), allow_pickle=False)


def section_resources(declared: StageResources, section: Any) -> StageResources:
    """A stage's declared reservation as it applies to one config section: the section's ``gpus``
    when set; no GPU when its device is ``cpu`` or the machine has no CUDA device; otherwise the
    declared share. The CPUs are the declaration's."""
    if section.gpus is not None:
        return dataclasses.replace(declared, gpus=float(section.gpus))
    if section.device == "cpu":
        return dataclasses.replace(declared, gpus=0.0)
    import torch

    return declared if torch.cuda.is_available() else dataclasses.replace(declared, gpus=0.0)


def _release_accelerator_memory() -> None:
    """Return cached CUDA blocks after dropping a model (only where torch already runs on CUDA)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


class ClipStage(Stage):
    """A clip stage configured by one config section (``config_type``), kept as ``self.cfg``.

    Times each clip into ``stats['<name>_ms']`` and, for a stage with a model, records the device
    it ran on in ``stats['<name>_device']`` (fp16 on a GPU can change results; the device is not in
    any key).

    ``name``, ``resources``, ``requires``, ``produces`` and ``depends_on`` are class attributes: the
    declaration. The one per-instance value is the GPU share of a model stage: its class declares
    ``GPU_SHARE`` (what a worker asks for on a CUDA machine), and the instance's ``resources`` is
    that declaration resolved for its section (``section_resources``: the section's ``gpus``
    override, none on a CPU device or machine), because the executor places workers by the
    instance. Stages that declare no GPU keep the class attribute as it is.

    ``models`` names the attributes ``setup()`` fills; ``teardown()`` drops them (the ultralytics
    models and onnxruntime sessions with their memory) and the stage sets up again on next use.
    """

    config_type: ClassVar[type] = object
    models: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Any):
        super().__init__()
        if not isinstance(cfg, self.config_type):
            raise TypeError(f"{type(self).__name__} takes its {self.config_type.__name__} section "
                            f"(e.g. cfg.{_SECTION_NAMES.get(self.config_type, '?')}), got {type(cfg).__name__}")
        self.cfg = cfg
        self.device = ""
        for attr in self.models:
            setattr(self, attr, None)
        if type(self).resources.gpus > 0:
            self.resources = section_resources(type(self).resources, cfg)

    def cache_settings(self) -> dict:
        from anycharv.preprocessing.keys import section_payload

        return section_payload(self.cfg)

    def teardown(self) -> None:
        if not self.models:
            return
        for attr in self.models:
            setattr(self, attr, None)
        self._ready = False
        _release_accelerator_memory()

    def process_one(self, task: ClipTask) -> ClipTask:
        t0 = time.perf_counter()
        try:
            task = self.run(task)
        except InputError as exc:  # e.g. the source stopped decoding mid-clip: keep its reason code
            return task.reject(exc.code, f"{self.name}: {exc}")
        task.stats[f"{self.name}_ms"] = round((time.perf_counter() - t0) * 1000.0, 1)
        if self.device:
            task.stats[f"{self.name}_device"] = self.device
        return task

    def run(self, task: ClipTask) -> ClipTask:  # pragma: no cover - subclasses override
        raise NotImplementedError


_SECTION_NAMES = {DetectConfig: "detect", MaskConfig: "mask", PoseConfig: "pose", FilterConfig: "filter",
                  PreviewConfig: "preview"}


class DetectTrackStage(ClipStage):
    """Boxes and person counts of the main character. ``detect_keypoints`` (its COCO-17 keypoints,
    ``annotations.py``) is written when the detector is a pose model and ``detect.keypoints`` is on;
    the pose stage relies on it only where ``pose.reuses_detect`` holds, which implies both (the
    detector then has the pose stage's own weights)."""

    name = "detect_track"
    config_type = DetectConfig
    resources = StageResources(cpus=1.0, gpus=GPU_SHARE)
    requires = ()
    produces = ("boxes", "person_counts", "detect_keypoints")
    depends_on = ()
    models = ("tracker",)

    def setup(self) -> None:
        from anycharv.preprocessing.detect_track import PersonTracker

        self.tracker = PersonTracker(self.cfg)
        self.device = str(self.tracker.device)

    def run(self, task: ClipTask) -> ClipTask:
        frames = clip_frames(task)
        res = self.tracker.track(frames)
        os.makedirs(task.work_dir, exist_ok=True)
        task.annotations["boxes"] = ann.save_array(task.work_dir, "boxes", res.boxes)
        counts = res.person_counts.astype(np.int16)
        task.annotations["person_counts"] = ann.save_array(task.work_dir, "person_counts", counts)
        if res.keypoints is not None:
            task.annotations["detect_keypoints"] = ann.save_array(task.work_dir, "detect_keypoints", res.keypoints)
        task.track_id = int(res.track_id)
        present = ~np.isnan(res.boxes).any(axis=1)
        b = res.boxes[present]
        area = 0.0
        if len(b):
            area = float(np.mean((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) / (task.width * task.height))
        task.stats.update({
            "num_tracks": len(res.track_lengths),
            "main_presence": float(present.mean()),
            "mean_box_area": area,
            "person_count_min": int(res.person_counts.min()),
            "person_count_max": int(res.person_counts.max()),
            "other_person_ratio_max": float(res.other_ratio.max()) if len(res.other_ratio) else 0.0,
        })
        if res.track_id < 0:
            return task.reject("no_person", "no person track in the clip")
        return task


class _FilterRules(ClipStage):
    """What both filters share: the ``FilterConfig`` section and the person/box rules."""

    config_type = FilterConfig
    resources = StageResources(cpus=0.5, gpus=0.0)
    produces = ()

    def people_verdict(self, task: ClipTask) -> tuple[str, str] | None:
        counts = load_annotation(task, "person_counts")
        return check_people(load_boxes(task), counts, float(task.stats.get("other_person_ratio_max", 0.0)),
                            task.width, task.height, self.cfg)

    def verdict(self, task: ClipTask) -> tuple[str, str] | None:  # pragma: no cover - subclasses override
        raise NotImplementedError

    def run(self, task: ClipTask) -> ClipTask:
        verdict = self.verdict(task)
        return task.reject(*verdict) if verdict is not None else task


class PeopleFilterStage(_FilterRules):
    """The person and box rules on detect+track's output alone, so that clips with the wrong
    people are dropped before the expensive stages."""

    name = "filter_people"
    requires = ("boxes", "person_counts")
    depends_on = ("detect_track",)

    def verdict(self, task: ClipTask) -> tuple[str, str] | None:
        return self.people_verdict(task)


class FinalFilterStage(_FilterRules):
    """The person rules again, then the pose and mask rules on the stats those stages recorded
    (``mean_kp_conf`` from the keypoints, ``mask_box_coverage``/``mask_outside_box`` from the masks)."""

    name = "filter"
    requires = ("boxes", "person_counts", "masks", "keypoints")
    depends_on = ("detect_track", "fine_mask", "pose")

    def verdict(self, task: ClipTask) -> tuple[str, str] | None:
        return self.people_verdict(task) or check_clip(task.stats, self.cfg)


class FineMaskStage(ClipStage):
    name = "fine_mask"
    config_type = MaskConfig
    resources = StageResources(cpus=1.0, gpus=GPU_SHARE)
    requires = ("boxes",)
    produces = ("masks",)
    depends_on = ("detect_track",)
    models = ("masker",)

    def setup(self) -> None:
        from anycharv.devices import pick_device
        from anycharv.preprocessing.fine_mask import build_masker

        self.masker = build_masker(self.cfg)
        self.device = str(pick_device(self.cfg.device))
        if getattr(self.masker, "engine", None) == "torch-int8":
            from anycharv.allocator import keep_freed_memory

            # the int8 engine allocates its activations afresh per frame: without this a 1024 input pays
            # ~600k page faults per frame (3.5 s instead of 2.0 s on one core)
            keep_freed_memory()

    def run(self, task: ClipTask) -> ClipTask:
        res = self.masker(clip_frames(task), load_boxes(task))
        task.annotations["masks"] = ann.save_masks(task.work_dir, res.masks)
        seen = ~np.isnan(res.coverage)
        task.stats["mask_box_coverage"] = float(np.mean(res.coverage[seen])) if seen.any() else 0.0
        task.stats["mask_outside_box"] = float(np.mean(res.outside[seen])) if seen.any() else 0.0
        task.stats["mask_backend"] = self.cfg.backend
        if getattr(self.masker, "engine", None):
            task.stats["mask_engine"] = self.masker.engine
        return task


class PoseStage(ClipStage):
    """Pose of the main character with the configured backend's model."""

    name = "pose"
    config_type = PoseConfig
    resources = StageResources(cpus=1.0, gpus=GPU_SHARE)
    requires = ("boxes",)
    produces = ("keypoints",)
    depends_on = ("detect_track",)
    models = ("estimator",)

    def setup(self) -> None:
        from anycharv.devices import pick_device
        from anycharv.preprocessing.pose import build_pose_estimator

        self.estimator = build_pose_estimator(self.cfg)
        self.device = str(pick_device(self.cfg.device))

    def keypoints(self, task: ClipTask, boxes: np.ndarray) -> tuple[np.ndarray, str]:
        """(T, K, 3) keypoints of the clip and their layout."""
        return self.estimator(clip_frames(task), boxes), self.estimator.layout

    def run(self, task: ClipTask) -> ClipTask:
        from anycharv.preprocessing.pose import body_confidence

        boxes = load_boxes(task)
        kps, layout = self.keypoints(task, boxes)
        task.annotations["keypoints"] = ann.save_array(task.work_dir, "keypoints", kps.astype(np.float32))
        present = ~np.isnan(boxes).any(axis=1)
        task.stats["keypoint_layout"] = layout
        task.stats["num_keypoints"] = int(kps.shape[1])
        task.stats["mean_kp_conf"] = body_confidence(kps[present]) if present.any() else 0.0
        return task


class PoseFromDetectStage(PoseStage):
    """The ``ultralytics-pose`` result without a second pass: detect+track already ran the same
    model with the same settings on the same frames (``pose.reuses_detect``), so its kept keypoints
    are mapped to ``openpose18``. Loads no model and reads no frames; the device recorded is the
    one detect+track ran on (where these keypoints were computed). Same name, outputs and key
    settings as ``PoseStage``; its output follows detect+track's through ``depends_on``."""

    resources = StageResources(cpus=0.5, gpus=0.0)
    requires = ("boxes", "detect_keypoints")
    models = ()

    def setup(self) -> None:
        """Nothing to load."""

    def keypoints(self, task: ClipTask, boxes: np.ndarray) -> tuple[np.ndarray, str]:
        from anycharv.preprocessing.pose import keypoints_from_detect

        if "detect_keypoints" not in task.annotations:
            raise ValueError(f"{self.name}: detect_track kept no keypoints for this clip (its model is not a pose "
                             "model?); set pose.reuse_detect=false")
        kps = keypoints_from_detect(load_annotation(task, "detect_keypoints"))
        if len(kps) != len(boxes):
            raise ValueError(f"{self.name}: {len(kps)} frames of detect keypoints for {len(boxes)} boxes")
        return kps, "openpose18"

    def run(self, task: ClipTask) -> ClipTask:
        task = super().run(task)
        if task.stats.get("detect_track_device"):
            task.stats[f"{self.name}_device"] = task.stats["detect_track_device"]
        return task


class PreviewStage(ClipStage):
    name = "preview"
    config_type = PreviewConfig
    resources = StageResources(cpus=0.5, gpus=0.0)
    requires = ("boxes", "masks", "keypoints")
    produces = ("preview",)
    depends_on = ("detect_track", "fine_mask", "pose")

    def run(self, task: ClipTask) -> ClipTask:
        from anycharv.preprocessing.preview import preview_indices, preview_strip

        pc = self.cfg
        if not pc.enabled:
            return task
        names = {k: v for k, v in task.annotations.items() if k in ("boxes", "masks", "keypoints")}
        data = ann.load_clip_annotations(task.work_dir, names)
        frames = clip_frames(task)
        strip = preview_strip(frames, preview_indices(len(frames), pc.num_frames), data.get("masks"),
                              data.get("boxes"), data.get("keypoints"),
                              task.stats.get("keypoint_layout", "openpose18"), pc.height, pc.conf_threshold)
        task.annotations["preview"] = ann.save_png(task.work_dir, "preview", strip)
        return task


def pose_stage(detect: DetectConfig, pose: PoseConfig) -> PoseStage:
    """The pose stage for these sections: the keypoint reuse where it gives the same result as a
    separate pass (``pose.reuses_detect``), else the model pass."""
    from anycharv.preprocessing.pose import reuses_detect

    return PoseFromDetectStage(pose) if reuses_detect(detect, pose) else PoseStage(pose)


def build_clip_stages(cfg: PreprocessConfig) -> list[Stage]:
    """The clip stages in pipeline order, each given its own section, with their order checked
    (models load later, in each stage's ``setup()``)."""
    stages: list[Stage] = [DetectTrackStage(cfg.detect), PeopleFilterStage(cfg.filter), FineMaskStage(cfg.mask),
                           pose_stage(cfg.detect, cfg.pose), FinalFilterStage(cfg.filter)]
    if cfg.preview.enabled:
        stages.append(PreviewStage(cfg.preview))
    check_order(stages)
    return stages


def run_stages(tasks: list[ClipTask], stages: list[Stage]) -> list[ClipTask]:
    for stage in stages:
        tasks = stage.process_batch(tasks)
    return tasks


def process_clip_plain(source: str, cfg: PreprocessConfig, work_root: str,
                       stages: list[Stage] | None = None) -> list[ClipTask]:
    """Plan ``source`` and run every clip through the stages in a plain loop (no Ray, no Prefect).

    Raises InputError for an unusable source; per-clip failures are recorded on the clips. Pass
    ``stages`` (from ``build_clip_stages``) to reuse loaded models across calls."""
    from anycharv.preprocessing.plan import plan_video

    tasks = plan_video(source, cfg, work_root)
    return run_stages(tasks, stages if stages is not None else build_clip_stages(cfg))
