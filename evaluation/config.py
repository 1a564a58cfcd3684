"""What an evaluation computes (``EvalConfig``) and how it runs (``EvalRuntime``: never changes a
number). ``EvalJob`` is the typed parameter of the Prefect flow ``evaluate`` and of ``anycharv
evaluate``; overrides read ``eval.steps=10``, ``eval.fid_weights=/models/inception_v3.pth``,
``runtime.executor=local``.

``METRICS`` lists every metric the job knows, whether a higher value is better, and which config
field names the local weights it needs (None: computed always). Nothing is ever downloaded: a
metric whose weights are not given is skipped, and the summary says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from anycharv.config import StrictModel, config_hash
from anycharv.executor.config import ExecutorConfig


@dataclass(frozen=True)
class MetricInfo:
    higher_is_better: bool
    weights: str | None = None  # the EvalConfig field that names its weights (None: always computed)
    kind: str = "clip"  # "clip": one value per clip, averaged; "set": one value over all clips (Fréchet)


PIXEL_METRICS = ("psnr", "psnr_mask", "psnr_outside", "ssim", "ssim_mask", "ssim_outside", "l1", "l1_mask",
                 "l1_outside")
METRICS: dict[str, MetricInfo] = {
    **{name: MetricInfo(higher_is_better=not name.startswith("l1")) for name in PIXEL_METRICS},
    "lpips": MetricInfo(False, "lpips_weights"),
    "clip_i": MetricInfo(True, "clip_weights"),
    "dino_i": MetricInfo(True, "dino_weights"),
    "fid": MetricInfo(False, "fid_weights", kind="set"),
    "fvd": MetricInfo(False, "fvd_weights", kind="set"),
}
OPTIONAL_METRICS = tuple(name for name, info in METRICS.items() if info.weights)
WEIGHT_FIELDS = ("lpips_weights", "lpips_backbone", "clip_weights", "dino_weights", "fid_weights", "fvd_weights")


class EvalConfig(StrictModel):
    split: Literal["val", "train"] = Field(
        "val", description="the cache's split to score (val: held-out clips; train when the cache has none, "
                           "with a warning and split_used=train in the summary)")
    num_clips: int | None = Field(32, ge=1, description="clips scored at most (empty: every clip of the split); "
                                                        "the same ones for every model, chosen by eval.seed")
    num_frames: int = Field(16, ge=1, le=512, description="frames generated per clip, from its first frame "
                                                          "(a shorter clip is scored on its own length)")
    steps: int = Field(20, ge=1, le=1000, description="DDIM sampling steps per clip")
    guidance: float = Field(3.0, ge=0.0, le=50.0, description="classifier-free guidance scale (<= 1: none)")
    seed: int = Field(0, description="seed of the clip choice, each clip's reference and its initial noise")
    condition: Literal["box", "fine"] = Field(
        "box", description="box: the clip's own frames and the padded box mask as the target-video input "
                           "(inference's and stage 2's layout); fine: the frames with the fine mask blacked out "
                           "and that mask (stage 1's)")
    context_frames: int = Field(24, ge=1, description="frames per denoising window")
    context_overlap: int = Field(6, ge=0, description="frames shared by neighbouring windows")
    metric: str = Field("psnr_mask", description="the primary metric: summary.score, what promotion compares")
    num_previews: int = Field(4, ge=0, le=64, description="preview PNGs (target over generated) of the first clips")
    lpips_weights: str | None = Field(
        None, description="LPIPS linear layers: the lpips release's weights/v0.1/<net>.pth (a state-dict file)")
    lpips_backbone: str | None = Field(
        None, description="LPIPS backbone: a torchvision alexnet/vgg16 state-dict file (features.* keys at least)")
    lpips_net: Literal["alex", "vgg"] = Field("alex", description="the LPIPS backbone those files are for")
    clip_weights: str | None = Field(None, description="CLIP-I: a transformers CLIPVisionModelWithProjection folder")
    dino_weights: str | None = Field(None, description="DINO-I: a transformers Dinov2Model or ViTModel folder")
    fid_weights: str | None = Field(
        None, description="FID: a torchvision inception_v3 state-dict file (.pth); NOT the TF-Inception weights of "
                          "published FID numbers (see anycharv.evaluation.feature_metrics)")
    fvd_weights: str | None = Field(None, description="FVD: StyleGAN-V's i3d_torchscript.pt (TorchScript I3D)")
    fvd_frames: int = Field(16, ge=1, description="frames per video for FVD (StyleGAN-V: 16); shorter clips are "
                                                  "left out of it")

    @model_validator(mode="after")
    def _check(self) -> "EvalConfig":
        if self.context_overlap >= self.context_frames:
            raise ValueError(f"context_overlap ({self.context_overlap}) must be smaller than context_frames "
                             f"({self.context_frames})")
        return self


class EvalRuntime(ExecutorConfig):
    batch_size: int | None = Field(1, ge=1, description="clips per stage call (each clip is sampled on its own)")
    device: str = Field("auto", description="device (auto: a GPU when there is one)")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="network dtype (auto: fp32 on CPU, bf16/fp16 on GPU); the VAE and the metric networks "
                            "stay float32")
    vae_chunk: int = Field(8, ge=1, description="frames per VAE decode call")
    progress: bool = Field(True, description="show a progress bar on a terminal")


class EvalJob(StrictModel):
    """An evaluation config plus how to run it."""

    eval: EvalConfig = EvalConfig()
    runtime: EvalRuntime = EvalRuntime()

    def content_hash(self) -> str:
        return config_hash(self.eval, exclude={"num_previews"})
