"""The batch-inference job's one stage: a job row in, an mp4 and a preview PNG out.

``setup()`` loads, once per worker, the pipeline (on a GPU when there is one), the preprocessing's
person detector (tracking the target videos, and checking that a reference shows a person) and
ISNet (the reference cut-out). Per job: check the reference, prepare the target video (track, box
masks, pose renders; ``prepare_target``), run ``infer_video`` (pipeline + paste-back), write the mp4
at the source fps with the source's audio trimmed to the frames used (temporary name + rename), and
the preview ``source | result | reference`` at the middle frame. A bad input rejects its job with a
reason code naming the input; the batch goes on.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

from anycharv.atomic import atomic_path
from anycharv.devices import pick_device, pick_dtype
from anycharv.errors import InputError
from anycharv.executor.stage import Stage, StageResources
from anycharv.inference.batch_config import BatchConfig
from anycharv.inference.batch_jobs import BatchTask, inside

# InputError codes of the code this stage calls -> the reason codes of results.parquet.
VIDEO_REASONS = {"not_found": "not_found", "empty_file": "unreadable_video", "not_video": "unreadable_video",
                 "unreadable": "unreadable_video", "truncated": "unreadable_video", "zero_frames": "unreadable_video",
                 "too_small": "unreadable_video", "no_person": "no_person", "person_not_found": "bad_person",
                 "bad_size": "bad_value", "bad_input": "bad_value"}
IMAGE_REASONS = {"missing": "not_found", "unreadable": "unreadable_image", "too_small": "unreadable_image",
                 "no_character": "no_person_reference"}
PRESETS = ("tiny", "sd15")  # sd15: random SD-1.5-size networks (benchmarks)


def load_pipeline(weights: str | None, preset: str | None, *, vae: str | None = None,
                  image_encoder: str | None = None, device: str = "auto", dtype: str = "auto",
                  parity: bool = False):
    """The pipeline on the chosen device: ``preset`` tiny (random tiny networks, seed 0), sd15
    (random SD-1.5-size networks, built on the device), or the weights of ``anycharv infer``."""
    from anycharv.model.components import build_pipeline, load_components

    target = pick_device(device)
    torch_dtype = pick_dtype(target, dtype)
    if preset == "sd15":
        from anycharv.model.pipeline import AnyCharVPipeline
        from anycharv.model.sd15 import build_sd15_components

        pipe = AnyCharVPipeline.from_components(build_sd15_components(target, torch_dtype), parity=parity)
    else:
        components = load_components(weights, preset=preset, vae=vae, image_encoder=image_encoder, seed=0)
        pipe = build_pipeline(components, device=target, dtype=torch_dtype, parity=parity)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def person_in_image(detections, width: int, height: int, conf: float, min_area: float) -> tuple[bool, str]:
    """Whether one Ultralytics result holds a person of at least ``conf`` covering ``min_area`` of
    the image; and a description of the best candidate."""
    boxes = detections.boxes.cpu().numpy()
    if not len(boxes):
        return False, "no person detected"
    xyxy = boxes.xyxy.reshape(-1, 4)
    areas = (xyxy[:, 2] - xyxy[:, 0]).clip(0) * (xyxy[:, 3] - xyxy[:, 1]).clip(0) / float(width * height)
    good = (boxes.conf >= conf) & (areas >= min_area)
    best = int(np.argmax(boxes.conf))
    found = f"best person detection: confidence {float(boxes.conf[best]):.2f}, {100 * areas[best]:.1f}% of the image"
    return bool(good.any()), found


def _fit_height(image: np.ndarray, height: int) -> np.ndarray:
    import cv2

    width = max(1, int(round(image.shape[1] * height / image.shape[0])))
    interp = cv2.INTER_AREA if height < image.shape[0] else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interp)


def preview_image(source: np.ndarray, result: np.ndarray, reference: np.ndarray, height: int) -> np.ndarray:
    """``source | result | reference`` side by side, each scaled to ``height`` (uint8 RGB)."""
    gap = np.full((height, 4, 3), 255, np.uint8)
    parts = [_fit_height(source, height), gap, _fit_height(result, height), gap, _fit_height(reference, height)]
    return np.concatenate(parts, axis=1)


def write_png(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    with atomic_path(path, keep_suffix=True) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


class BatchInferStage(Stage):
    name: ClassVar[str] = "infer"
    resources: ClassVar[StageResources] = StageResources(cpus=1.0, gpus=1.0)
    batch_size: ClassVar[int] = 1

    def __init__(self, cfg: BatchConfig, prep, videos_dir: str, previews_dir: str, *, weights: str | None = None,
                 preset: str | None = None, device: str = "auto", dtype: str = "auto", cpus: float = 1.0,
                 gpus: float = 1.0):
        super().__init__()
        self.cfg, self.prep = cfg, prep  # prep: the PreprocessConfig of prepare_target (detector, pose, ISNet)
        self.videos_dir, self.previews_dir = videos_dir, previews_dir
        self.weights, self.preset = weights, preset
        self.device_spec, self.dtype_spec = device, dtype
        on_gpu = device != "cpu" and _cuda_available()
        self.resources = StageResources(cpus=float(cpus), gpus=float(gpus) if on_gpu else 0.0)
        self.pipe = self.tracker = self.pose = self.segment = None

    def setup(self) -> None:
        from anycharv.allocator import keep_freed_memory
        from anycharv.inference.video import isnet_segmenter

        keep_freed_memory()  # a worker runs jobs until the batch ends: reuse freed pages
        from anycharv.preprocessing.detect_track import PersonTracker, keep_torch_threads

        self.pipe = load_pipeline(self.weights, self.preset, vae=self.cfg.vae, image_encoder=self.cfg.image_encoder,
                                  device=self.device_spec, dtype=self.dtype_spec, parity=self.cfg.parity)
        from anycharv.preprocessing.pose import build_pose_estimator

        with keep_torch_threads():
            self.tracker = PersonTracker(self.prep.detect)
            self.pose = build_pose_estimator(self.prep.pose)
        self.segment = isnet_segmenter(self.prep.mask) if self.cfg.ref_segment else None

    def teardown(self) -> None:
        self.pipe = self.tracker = self.pose = self.segment = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - teardown must not fail a finished run
            pass

    def process_one(self, task: BatchTask) -> BatchTask:
        started = time.perf_counter()
        try:
            self._run(task)
        except InputError as exc:
            task.reject(exc.code, f"job {task.job_id}: {exc}")
        finally:
            task.seconds = round(time.perf_counter() - started, 3)
        return task

    # -------------------------------------------------------------------------------- the job
    def _check_reference(self, task: BatchTask) -> np.ndarray:
        from anycharv.model.reference_prep import load_image
        from anycharv.preprocessing.detect_track import keep_torch_threads

        try:
            rgb, _alpha = load_image(task.reference, "reference")
        except InputError as exc:
            raise InputError(exc.input_name, exc.reason, code=IMAGE_REASONS.get(exc.code, exc.code)) from None
        if self.cfg.reference_person_conf > 0:
            with keep_torch_threads():
                result = self.tracker.detect(rgb[None])[0]
            found, what = person_in_image(result, rgb.shape[1], rgb.shape[0], self.cfg.reference_person_conf,
                                          self.cfg.reference_person_min_area)
            if not found:
                raise InputError(f"reference {task.reference}",
                                 f"no person found ({what}; needs confidence >= {self.cfg.reference_person_conf:g} "
                                 f"and >= {100 * self.cfg.reference_person_min_area:g}% of the image)",
                                 code="no_person_reference")
        return rgb

    def _target(self, task: BatchTask):
        from anycharv.inference.target_prep import prepare_target
        from anycharv.preprocessing.detect_track import keep_torch_threads

        try:
            with keep_torch_threads():
                return prepare_target(task.video, self.prep, task.person, task.size, task.max_frames,
                                      start=task.start, box_pad=self.cfg.box_pad, tracker=self.tracker,
                                      pose_estimator=self.pose, max_long_side=self.cfg.max_long_side)
        except InputError as exc:
            named = exc.input_name == task.video or task.video in exc.reason
            name = exc.input_name if named else f"{exc.input_name} (video {task.video})"
            raise InputError(name, exc.reason, code=VIDEO_REASONS.get(exc.code, exc.code)) from None

    def _run(self, task: BatchTask) -> None:
        from anycharv.inference.audio import write_video_with_audio
        from anycharv.inference.video import infer_video

        self._check_reference(task)
        target = self._target(task)
        task.track_id, task.fps = int(target.track_id), float(target.fps)
        try:
            result = infer_video(self.pipe, task.reference, target=target, steps=task.steps, guidance=task.guidance,
                                 seed=task.seed, feather_px=self.cfg.feather_px, segment=self.segment,
                                 ref_background=self.cfg.ref_background, context_frames=self.cfg.context_frames,
                                 context_overlap=self.cfg.context_overlap)
        except InputError as exc:
            raise InputError(exc.input_name, exc.reason, code=IMAGE_REASONS.get(exc.code, exc.code)) from None
        out = inside(Path(self.videos_dir), task.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        audio_from = task.video if self.cfg.keep_audio else None
        try:
            task.audio = write_video_with_audio(out, result.video, result.fps, audio_from=audio_from,
                                                begin_s=task.start / result.fps, crf=self.cfg.crf)
        except InputError:
            raise
        except Exception as exc:  # the sound could not be carried over: keep the video, say so in the row
            if audio_from is None:
                raise
            from anycharv.model.video_writer import write_video

            write_video(out, result.video, result.fps, crf=self.cfg.crf)
            task.audio = f"failed: {type(exc).__name__}: {exc}"[:300]
        task.frames = int(len(result.video))
        middle = len(result.video) // 2
        preview = preview_image(target.source_frames[middle], result.video[middle], result.reference.image,
                                self.cfg.preview_height)
        write_png(Path(self.previews_dir) / f"{task.stem}.png", preview)


def stage_resources(cpus: float | None, gpus: float, num_workers: int, device: str) -> tuple[float, float]:
    """(CPUs, GPUs) per worker: given, or 1 CPU next to a GPU, else this machine's cores shared."""
    on_gpu = device != "cpu" and _cuda_available() and gpus > 0
    if cpus is None:
        cpus = 1.0 if on_gpu else float(max(1, (os.cpu_count() or 1) // max(1, num_workers)))
    return float(cpus), float(gpus) if on_gpu else 0.0


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()

