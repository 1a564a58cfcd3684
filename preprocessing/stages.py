"""The clip stages as ``Stage`` subclasses, plus a plain-Python loop over them.

Pipeline order (``build_clip_stages``): detect+track -> people filter (cheap, before the expensive
stages) -> fine mask -> pose -> final filter -> preview. Every stage re-reads its frames from the
source (``ClipTask`` carries paths only), writes its files into ``task.work_dir`` (see
``annotations.py``), records them in ``task.annotations`` and plain-number stats in ``task.stats``
(including ``<stage>_ms``, its wall time for the clip).
"""

from __future__ import annotations

import os
import time

import numpy as np

from anycharv.errors import InputError
from anycharv.preprocessing import annotations as ann
from anycharv.preprocessing.config import PreprocessConfig
from anycharv.preprocessing.filter import check_clip, check_people
from anycharv.preprocessing.records import ClipTask
from anycharv.executor.stage import Stage, StageResources
from anycharv.preprocessing.video_io import read_frames


def _gpu_share(section) -> float:
    if section.gpus is not None:
        return float(section.gpus)
    if section.device == "cpu":
        return 0.0
    import torch

    return 0.25 if torch.cuda.is_available() else 0.0


def clip_frames(task: ClipTask) -> np.ndarray:
    return read_frames(task.source, task.start_frame, task.end_frame, (task.width, task.height))


def load_boxes(task: ClipTask) -> np.ndarray:
    return np.load(os.path.join(task.work_dir, task.annotations["boxes"]), allow_pickle=False)


class ClipStage(Stage):
    """A stage configured by one section of a PreprocessConfig (``section``); times each clip into
    ``stats['<name>_ms']`` and, for a stage with a model, records the device it ran on in
    ``stats['<name>_device']`` (fp16 on a GPU can change results; the device is not in any key)."""

    section: str = ""

    def __init__(self, cfg: PreprocessConfig):
        super().__init__()
        self.cfg = cfg
        self.device = ""

    def cache_settings(self) -> dict:
        from anycharv.preprocessing.keys import section_payload

        return section_payload(getattr(self.cfg, self.section))

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


class DetectTrackStage(ClipStage):
    name = "detect_track"
    section = "detect"
    depends_on = ()

    def __init__(self, cfg: PreprocessConfig):
        super().__init__(cfg)
        self.resources = StageResources(cpus=1.0, gpus=_gpu_share(cfg.detect))

    def setup(self) -> None:
        from anycharv.preprocessing.detect_track import PersonTracker

        self.tracker = PersonTracker(self.cfg.detect)
        self.device = str(self.tracker.device)

    def run(self, task: ClipTask) -> ClipTask:
        frames = clip_frames(task)
        res = self.tracker.track(frames)
        os.makedirs(task.work_dir, exist_ok=True)
        task.annotations["boxes"] = ann.save_array(task.work_dir, "boxes", res.boxes)
        task.annotations["person_counts"] = ann.save_array(task.work_dir, "person_counts", res.person_counts.astype(np.int16))
        task.track_id = int(res.track_id)
        present = ~np.isnan(res.boxes).any(axis=1)
        b = res.boxes[present]
        area = float(np.mean((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) / (task.width * task.height)) if len(b) else 0.0
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


class FilterStage(ClipStage):
    """``phase="people"`` checks only the detect stage's output; ``"final"`` checks everything."""

    resources = StageResources(cpus=0.5, gpus=0.0)
    section = "filter"

    def __init__(self, cfg: PreprocessConfig, phase: str = "final"):
        super().__init__(cfg)
        if phase not in ("people", "final"):
            raise ValueError(f"FilterStage phase {phase!r}: expected 'people' or 'final'")
        self.phase = phase
        self.name = "filter_people" if phase == "people" else "filter"
        self.depends_on = ("detect_track",) if phase == "people" else ("detect_track", "fine_mask", "pose")

    def run(self, task: ClipTask) -> ClipTask:
        counts = np.load(os.path.join(task.work_dir, task.annotations["person_counts"]), allow_pickle=False)
        verdict = check_people(load_boxes(task), counts, float(task.stats.get("other_person_ratio_max", 0.0)),
                               task.width, task.height, self.cfg.filter)
        if verdict is None and self.phase == "final":
            verdict = check_clip(task.stats, self.cfg.filter)
        if verdict is not None:
            return task.reject(*verdict)
        return task


class FineMaskStage(ClipStage):
    name = "fine_mask"
    section = "mask"
    depends_on = ("detect_track",)

    def __init__(self, cfg: PreprocessConfig):
        super().__init__(cfg)
        self.resources = StageResources(cpus=1.0, gpus=_gpu_share(cfg.mask))

    def setup(self) -> None:
        from anycharv.preprocessing.fine_mask import build_masker

        from anycharv.devices import pick_device

        self.masker = build_masker(self.cfg.mask)
        self.device = str(pick_device(self.cfg.mask.device))

    def run(self, task: ClipTask) -> ClipTask:
        res = self.masker(clip_frames(task), load_boxes(task))
        task.annotations["masks"] = ann.save_masks(task.work_dir, res.masks)
        seen = ~np.isnan(res.coverage)
        task.stats["mask_box_coverage"] = float(np.mean(res.coverage[seen])) if seen.any() else 0.0
        task.stats["mask_outside_box"] = float(np.mean(res.outside[seen])) if seen.any() else 0.0
        task.stats["mask_backend"] = self.cfg.mask.backend
        return task


class PoseStage(ClipStage):
    name = "pose"
    section = "pose"
    depends_on = ("detect_track",)

    def __init__(self, cfg: PreprocessConfig):
        super().__init__(cfg)
        self.resources = StageResources(cpus=1.0, gpus=_gpu_share(cfg.pose))

    def setup(self) -> None:
        from anycharv.preprocessing.pose import build_pose_estimator

        from anycharv.devices import pick_device

        self.estimator = build_pose_estimator(self.cfg.pose)
        self.device = str(pick_device(self.cfg.pose.device))

    def run(self, task: ClipTask) -> ClipTask:
        from anycharv.preprocessing.pose import body_confidence

        boxes = load_boxes(task)
        kps = self.estimator(clip_frames(task), boxes)
        task.annotations["keypoints"] = ann.save_array(task.work_dir, "keypoints", kps.astype(np.float32))
        present = ~np.isnan(boxes).any(axis=1)
        task.stats["keypoint_layout"] = self.estimator.layout
        task.stats["num_keypoints"] = int(kps.shape[1])
        task.stats["mean_kp_conf"] = body_confidence(kps[present]) if present.any() else 0.0
        return task


class PreviewStage(ClipStage):
    name = "preview"
    section = "preview"
    depends_on = ("detect_track", "fine_mask", "pose")
    resources = StageResources(cpus=0.5, gpus=0.0)

    def run(self, task: ClipTask) -> ClipTask:
        from anycharv.preprocessing.preview import preview_indices, preview_strip

        pc = self.cfg.preview
        if not pc.enabled:
            return task
        data = ann.load_clip_annotations(task.work_dir, {k: v for k, v in task.annotations.items() if k != "preview"})
        frames = clip_frames(task)
        strip = preview_strip(frames, preview_indices(len(frames), pc.num_frames), data.get("masks"), data.get("boxes"),
                              data.get("keypoints"), task.stats.get("keypoint_layout", "openpose18"), pc.height,
                              pc.conf_threshold)
        task.annotations["preview"] = ann.save_png(task.work_dir, "preview", strip)
        return task


def build_clip_stages(cfg: PreprocessConfig) -> list[Stage]:
    """The clip stages in pipeline order (models load later, in each stage's ``setup()``)."""
    stages: list[Stage] = [DetectTrackStage(cfg), FilterStage(cfg, "people"), FineMaskStage(cfg), PoseStage(cfg),
                           FilterStage(cfg, "final")]
    if cfg.preview.enabled:
        stages.append(PreviewStage(cfg))
    return stages


def run_stages(tasks: list[ClipTask], stages: list[Stage]) -> list[ClipTask]:
    for stage in stages:
        tasks = stage.process_batch(tasks)
    return tasks


def process_clip_plain(source: str, cfg: PreprocessConfig, work_root: str, stages: list[Stage] | None = None) -> list[ClipTask]:
    """Plan ``source`` and run every clip through the stages in a plain loop (no Ray, no Prefect).

    Raises InputError for an unusable source; per-clip failures are recorded on the clips. Pass
    ``stages`` (from ``build_clip_stages``) to reuse loaded models across calls."""
    from anycharv.preprocessing.plan import plan_video

    tasks = plan_video(source, cfg, work_root)
    return run_stages(tasks, stages if stages is not None else build_clip_stages(cfg))
