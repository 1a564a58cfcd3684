"""What the self-boost job computes (``BoostConfig``: its content enters the output folder's key,
except the fields of ``NOT_IN_KEY``) and how it runs (``BoostRuntime``: never part of the key).
``BoostJob`` is the typed parameter of the Prefect flow and of ``anycharv self-boost``; overrides
read ``boost.steps=30``, ``runtime.executor=local``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from anycharv.config import StrictModel, config_hash
from anycharv.executor.config import ExecutorConfig

# Which clips are generated and how many previews are written change no sample: a run for the val
# split may follow one for train in the same folder.
NOT_IN_KEY = {"splits", "num_previews"}


class BoostConfig(StrictModel):
    steps: int = Field(20, ge=1, le=1000, description="DDIM sampling steps per clip")
    guidance: float = Field(3.0, ge=0.0, le=50.0, description="classifier-free guidance scale (<= 1: none)")
    seed: int = Field(0, description="seed of the reference choice and of each clip's initial noise")
    reference_pool: Literal["same_split_first", "same_split", "any_split"] = Field(
        "same_split_first",
        description="where a clip's reference character comes from (always another source video): "
                    "same_split_first: a clip of the same split, else of the other one (a validation split "
                    "of one video still gets pairs); same_split: never across splits; any_split: any clip")
    keep_raw_latents: bool = Field(False, description="also store the sampler's latents before the VAE round trip "
                                                      "(member generated_raw_latents.npy)")
    latent_dtype: Literal["float16", "float32"] | None = Field(
        None, description="dtype of the stored latents (empty: the cache's)")
    context_frames: int = Field(24, ge=1, description="frames per denoising window")
    context_overlap: int = Field(6, ge=0, description="frames shared by neighbouring windows")
    num_previews: int = Field(2, ge=0, le=64, description="side-by-side preview mp4s (original | generated)")
    splits: list[Literal["train", "val"]] = Field(
        ["train", "val"], description="splits to generate (stage 2's validation needs val pairs too)")

    @model_validator(mode="after")
    def _check(self) -> "BoostConfig":
        if self.context_overlap >= self.context_frames:
            raise ValueError(f"context_overlap ({self.context_overlap}) must be smaller than context_frames "
                             f"({self.context_frames})")
        if not self.splits:
            raise ValueError("splits: give at least one of train, val")
        return self


class BoostRuntime(ExecutorConfig):
    batch_size: int | None = Field(1, ge=1, description="clips per stage call (each clip is sampled on its own)")
    device: str = Field("auto", description="generation device (auto: a GPU when there is one)")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="network dtype (auto: fp32 on CPU, bf16/fp16 on GPU); the VAE stays float32, as "
                            "the cache encoded with it")
    vae_chunk: int = Field(8, ge=1, description="frames per VAE decode/encode call")
    resume: bool = Field(True, description="keep the samples and shards a previous run finished")
    progress: bool = Field(True, description="show a progress bar on a terminal")


class BoostJob(StrictModel):
    """A self-boost config plus how to run it."""

    boost: BoostConfig = BoostConfig()
    runtime: BoostRuntime = BoostRuntime()

    def content_hash(self) -> str:
        return config_hash(self.boost, exclude=NOT_IN_KEY)
