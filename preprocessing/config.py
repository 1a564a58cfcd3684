"""Typed config of the clip preprocessing (decode, split, detect+track, fine mask, pose, filter, preview).

The same model is the Prefect flow parameter and the YAML in ``configs/preprocess.yaml``. Weight
fields take either a file path or the name of an offline asset (resolved by ``anycharv.assets``);
they are checked when the config is loaded (``check_weights``), so a wrong path fails at once and
not in a stage's setup minutes later.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator, model_validator

from anycharv.config import StrictModel


def check_weights(spec: str) -> str:
    """A weights field as it is kept: an existing file or folder (made absolute, so Ray workers with
    another working folder find it), an Ultralytics model ``*.yaml`` (random init, used by tests),
    the name of an offline asset, or a name Ultralytics itself downloads; anything else is an error."""
    if os.path.exists(spec):
        return os.path.abspath(spec)
    if spec.endswith((".yaml", ".yml")):
        return spec
    from anycharv.assets import ASSETS

    if spec in ASSETS:
        return spec
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    if spec in GITHUB_ASSETS_NAMES:
        return spec
    raise ValueError(f"{spec}: no such file, and not the name of an offline asset (see `anycharv assets list`) "
                     "or of an Ultralytics release model")



class DecodeConfig(StrictModel):
    """How source videos are decoded and resized to the processing size."""

    short_side: int = Field(512, ge=16, description="short side of the processing size (pixels)")
    size_multiple: Literal[8, 16, 32, 64] = Field(64, description="both processing sides are multiples of this")
    upscale: bool = Field(False, description="upscale sources whose short side is below short_side")
    min_side: int = Field(64, ge=1, description="reject sources whose short side is below this (too_small)")
    max_pixels: int = Field(4096 * 2304, ge=1, description="reject sources with more pixels than this (too_large)")
    max_frames: int = Field(200_000, ge=1, description="reject sources with more frames than this (too_long)")
    backend: Literal["auto", "decord", "pyav"] = Field("auto", description="auto: decord, PyAV when decord fails")


class SplitConfig(StrictModel):
    """Fixed-length windows that never cross a shot cut."""

    clip_len: int = Field(24, ge=1, description="frames per clip")
    stride: int = Field(24, ge=1, description="start-to-start distance of consecutive clips")
    min_len: int = Field(16, ge=1, description="drop windows shorter than this (shot ends)")
    cut_threshold: float = Field(0.15, gt=0, le=1, description="mean abs grey difference (0..1) that marks a cut")
    cut_ratio: float = Field(3.0, ge=1, description="and the difference must exceed this x the local median")
    cut_size: int = Field(64, ge=8, description="width of the grey thumbnails the cut detector compares")
    max_clips_per_video: int | None = Field(None, ge=1, description="keep only the first N clips of a video")

    @model_validator(mode="after")
    def _check_lengths(self):
        if self.min_len > self.clip_len:
            raise ValueError(f"split.min_len ({self.min_len}) must be <= split.clip_len ({self.clip_len})")
        return self


class DetectConfig(StrictModel):
    """Person detection with an Ultralytics model plus its built-in tracker."""

    weights: str = Field("yolo11n-pose.pt", description="Ultralytics weights path or asset name (person class 0)")
    imgsz: int = Field(640, ge=32, description="inference size; small people need 1280")
    conf: float = Field(0.25, ge=0, le=1, description="detector confidence threshold")
    iou: float = Field(0.7, ge=0, le=1, description="NMS IoU threshold")
    tracker: Literal["bytetrack.yaml", "botsort.yaml"] = "bytetrack.yaml"
    main_person: Literal["longest_then_largest", "largest", "longest"] = Field(
        "longest_then_largest", description="which track is the main character")
    count_conf: float = Field(0.5, ge=0, le=1, description="detections at or above this count as people")
    count_min_area: float = Field(0.002, ge=0, le=1, description="ignore people smaller than this share of the frame")
    keypoints: bool = Field(True, description="with a pose model, keep the main track's keypoints (detect_keypoints), "
                                              "which the pose stage reuses instead of a second pass")
    batch: int = Field(8, ge=1, description="frames per detector forward")
    device: str = Field("auto", description="auto, cpu, cuda:N, mps")
    gpus: float | None = Field(None, ge=0, description="GPU share per worker (None: 0.25 when CUDA exists)")

    _weights = field_validator("weights")(lambda cls, v: check_weights(v))


class MaskConfig(StrictModel):
    """Fine foreground mask of the main character."""

    backend: Literal["isnet", "ultralytics"] = "isnet"
    weights: str = Field("isnet.onnx", description="ISNet ONNX, or YOLO-seg / SAM weights for ultralytics")
    size: int = Field(1024, ge=128, description="ISNet input size (multiple of 128; 1024 is the native size)")
    fit_crop: bool = Field(False, description="ISNet input sized to the crop (its long side rounded up to a multiple "
                                              "of 128, at most mask.size): faster on small people, but ISNet's masks "
                                              "change with its input size (see fine_mask.py); off: always mask.size")
    crop_margin: float = Field(0.15, ge=0, le=2, description="box is enlarged by this share per side for the crop")
    threshold: float = Field(0.5, gt=0, lt=1, description="foreground probability threshold")
    engine: Literal["auto", "onnxruntime", "torch-int8"] = Field(
        "auto", description="what runs the ISNet graph: onnxruntime, or torch-int8 (the quantized isnet.onnx with "
                            "int8 matrix products, same masks, faster on CPU); auto: torch-int8 for a quantized graph "
                            "on CPU, else onnxruntime")
    imgsz: int = Field(640, ge=32, description="inference size for the ultralytics backend")
    conf: float = Field(0.25, ge=0, le=1, description="instance confidence for the ultralytics YOLO-seg backend")
    device: str = "auto"
    gpus: float | None = Field(None, ge=0)

    _weights = field_validator("weights")(lambda cls, v: check_weights(v))

    @model_validator(mode="after")
    def _check_size(self):
        if self.size % 128:
            raise ValueError(f"mask.size ({self.size}) must be a multiple of 128")
        return self


class PoseConfig(StrictModel):
    """2D pose of the main character."""

    backend: Literal["ultralytics-pose", "dwpose"] = "ultralytics-pose"
    weights: str = Field("yolo11n-pose.pt", description="YOLO pose checkpoint (ultralytics-pose backend)")
    imgsz: int = Field(640, ge=32)
    conf: float = Field(0.25, ge=0, le=1)
    reuse_detect: bool = Field(True, description="ultralytics-pose: take detect+track's keypoints when it ran the "
                                                 "same weights, imgsz and conf (off: always a separate pass)")
    dwpose_dir: str | None = Field(None, description="folder with the DWPose detector and pose ONNX files")
    dwpose_det_file: str = "yolox_l.onnx"
    dwpose_pose_file: str = "dw-ll_ucoco_384.onnx"
    batch: int = Field(8, ge=1)
    device: str = "auto"
    gpus: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check_weights(self):
        if self.backend == "ultralytics-pose":
            self.__dict__["weights"] = check_weights(self.weights)
            return self
        if not self.dwpose_dir:
            raise ValueError("pose.dwpose_dir: required for the dwpose backend (folder with the ONNX files)")
        if not os.path.isfile(os.path.join(self.dwpose_dir, self.dwpose_pose_file)):
            raise ValueError(f"pose.dwpose_dir {self.dwpose_dir}: no {self.dwpose_pose_file} in it")
        self.__dict__["dwpose_dir"] = os.path.abspath(self.dwpose_dir)
        return self


class FilterConfig(StrictModel):
    """Which clips are kept (every rejection gets a reason code)."""

    people_rule: Literal["exactly_one", "main_dominant", "off"] = Field(
        "exactly_one", description="exactly_one: the official rule (one person in every frame)")
    min_presence: float = Field(0.9, ge=0, le=1, description="main track must be in this share of frames")
    dominant_ratio: float = Field(0.4, ge=0, le=1,
                                  description="main_dominant: others must be smaller than this x main")
    min_box_area: float = Field(0.01, ge=0, le=1, description="mean main box area as a share of the frame")
    min_box_height: float = Field(0.15, ge=0, le=1, description="mean main box height as a share of the frame")
    min_kp_conf: float = Field(0.3, ge=0, le=1, description="mean body keypoint confidence")
    min_mask_coverage: float = Field(0.1, ge=0, le=1, description="mean mask share of the box")
    max_mask_outside: float = Field(0.5, ge=0, le=1, description="mean share of raw foreground outside the box")


class PreviewConfig(StrictModel):
    enabled: bool = True
    num_frames: int = Field(4, ge=1, le=32)
    height: int = Field(256, ge=32, description="height of each preview tile")
    conf_threshold: float = Field(0.3, ge=0, le=1)


class PreprocessConfig(StrictModel):
    """All preprocessing sections; its hash is part of every clip id."""

    decode: DecodeConfig = DecodeConfig()
    split: SplitConfig = SplitConfig()
    detect: DetectConfig = DetectConfig()
    mask: MaskConfig = MaskConfig()
    pose: PoseConfig = PoseConfig()
    filter: FilterConfig = FilterConfig()
    preview: PreviewConfig = PreviewConfig()


def resolve_weights(spec: str) -> str:
    """A weights field as a local path: an existing file or folder as is, an Ultralytics model
    ``*.yaml`` (random init, used by tests) as is, otherwise the name of an offline asset."""
    if os.path.exists(spec) or spec.endswith((".yaml", ".yml")):
        return spec
    from anycharv.assets import asset_path

    return str(asset_path(spec))
