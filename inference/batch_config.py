"""What a batch-inference run computes (``BatchConfig``: the defaults of the job table's optional
columns and the settings every job shares; they enter each job's key, except ``NOT_IN_KEY``) and
how it runs (``BatchRuntime``: never part of a key). ``BatchJob`` is the typed parameter of the
Prefect flow ``batch_infer`` and of ``anycharv batch``; overrides read ``batch.steps=30``,
``runtime.executor=local``, ``detect.imgsz=1280``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from anycharv.config import StrictModel
from anycharv.executor.config import ExecutorConfig
from anycharv.preprocessing.config import DetectConfig, MaskConfig, PoseConfig, PreprocessConfig

# Model short side when neither the row nor the config gives one (as ``anycharv infer``).
DEFAULT_SIZE = {"weights": 576, "tiny": 128, "sd15": 576}
# Defaults of per-row columns (the row's effective value enters the key instead), what only
# decorates the outputs, and the model's files (keyed by their content instead of their path).
NOT_IN_KEY = {"steps", "guidance", "seed", "size", "start", "max_frames", "preview_height", "vae", "image_encoder"}


class BatchConfig(StrictModel):
    steps: int = Field(30, ge=1, le=1000, description="denoising steps (default of the `steps` column)")
    guidance: float = Field(3.0, ge=0.0, le=50.0, description="classifier-free guidance (default of `guidance`)")
    seed: int = Field(0, ge=0, description="noise seed (default of `seed`)")
    size: int | None = Field(None, ge=16, multiple_of=8,
                             description="model short side, a multiple of 8 (default of `size`; empty: 576, "
                                         "128 with the tiny preset)")
    max_long_side: int | None = Field(None, ge=0, description="cap of the model canvas's long side (empty: 2.5x "
                                                              "the short side; 0: no cap)")
    start: int = Field(0, ge=0, description="first frame of each video (default of `start`)")
    max_frames: int | None = Field(None, ge=1, description="frames per job from `start` (default of `max_frames`; "
                                                           "empty: the whole video)")
    box_pad: float = Field(0.1, ge=0.0, le=2.0, description="person box enlargement per side, share of the box")
    feather_px: float | None = Field(None, ge=0.0, description="paste-back feather in source pixels (empty: 2% of "
                                                               "the source short side)")
    ref_background: str = Field("black", description="reference canvas colour: black, white, gray or R,G,B")
    ref_segment: bool = Field(True, description="cut the character out of the reference photo (ISNet)")
    reference_person_conf: float = Field(
        0.6, ge=0.0, le=1.0,
        description="a reference image needs a person detection at or above this confidence (0: no check); "
                    "portraits score 0.85-0.9 with yolo11n-pose, random noise up to ~0.55")
    reference_person_min_area: float = Field(0.02, ge=0.0, le=1.0,
                                             description="... covering at least this share of the image")
    context_frames: int = Field(24, ge=1, description="frames per temporal window")
    context_overlap: int = Field(6, ge=0, description="frames shared by neighbouring windows")
    parity: bool = Field(False, description="reproduce the official implementation's quirks exactly")
    keep_audio: bool = Field(True, description="mux the source's audio track (trimmed to the frames used) into "
                                               "the output, re-encoded as AAC")
    crf: int = Field(18, ge=0, le=51, description="H.264 quality of the outputs (lower: better, larger)")
    preview_height: int = Field(256, ge=32, le=2048, description="height of OUT/previews/<job>.png")
    vae: str | None = Field(None, description="diffusers AutoencoderKL folder (official releases lack one)")
    image_encoder: str | None = Field(None, description="CLIPVisionModelWithProjection folder (ditto)")

    @model_validator(mode="after")
    def _check(self) -> "BatchConfig":
        if self.context_overlap >= self.context_frames:
            raise ValueError(f"context_overlap ({self.context_overlap}) must be smaller than context_frames "
                             f"({self.context_frames})")
        from anycharv.model.reference_prep import parse_background

        parse_background(self.ref_background)  # InputError (a ValueError) names the value
        return self


class BatchRuntime(ExecutorConfig):
    batch_size: int | None = Field(1, ge=1, description="jobs per stage call (each job runs on its own)")
    device: str = Field("auto", description="pipeline device (auto: a GPU when there is one)")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="network dtype (auto: fp32 on CPU, bf16/fp16 on GPU)")
    cpus_per_worker: float | None = Field(
        None, gt=0, description="CPUs reserved per worker (empty: 1 with a GPU each, else this machine's cores "
                                "shared by num_workers); its torch threads unless threads_per_worker is set")
    gpus_per_worker: float = Field(1.0, ge=0, le=8, description="GPU share per worker when CUDA is present "
                                                                 "(0.5: two workers per GPU)")
    resume: bool = Field(True, description="skip jobs a previous run finished with the same key")
    progress: bool = Field(True, description="show a progress bar on a terminal")


class BatchJob(StrictModel):
    """The shared job settings, the preprocessing models that prepare each target video (person
    detector + tracker, pose backend, ISNet for the reference cut-out), and how to run."""

    batch: BatchConfig = BatchConfig()
    detect: DetectConfig = DetectConfig()
    pose: PoseConfig = PoseConfig()
    mask: MaskConfig = MaskConfig()
    runtime: BatchRuntime = BatchRuntime()

    def preprocess_config(self) -> PreprocessConfig:
        """The preprocessing config ``prepare_target`` takes (its other sections at their defaults)."""
        return PreprocessConfig(detect=self.detect, pose=self.pose, mask=self.mask)
