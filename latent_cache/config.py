"""What the latent cache computes (``CacheConfig``: part of the cache's key) and how the job runs
(``CacheRuntime``: never part of it). ``CacheJob`` is the typed parameter of the Prefect flow and
of ``anycharv cache``; overrides read ``cache.mask_variants=3``, ``runtime.executor=local``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from anycharv.config import StrictModel, config_hash
from anycharv.executor.config import ExecutorConfig

LATENT_FACTOR = 8  # VAE downsampling: model sizes are multiples of it


class CacheConfig(StrictModel):
    buckets: list[tuple[int, int]] = Field(
        [(512, 512), (768, 512), (512, 768)],
        description="resolution buckets (height, width) in model pixels, multiples of 8; each clip goes to the "
                    "one nearest its aspect ratio and is cropped around its character to it")
    max_frames: int | None = Field(None, ge=1, description="frames per clip at most (empty: the whole clip)")
    mask_variants: int = Field(2, ge=0, le=16,
                               description="augmented fine masks per clip (alternating contour jitter and "
                                           "curved box), besides the original")
    num_references: int = Field(4, ge=1, le=64, description="candidate reference frames per clip")
    box_pad: float = Field(0.1, ge=0.0, le=1.0,
                           description="box-mask padding, a fraction of the box per side (inference's default)")
    latent_dtype: Literal["float16", "float32"] = Field("float16", description="dtype of the stored latents")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0,
                                description="share of source videos held out for validation (chosen by video)")
    samples_per_shard: int = Field(64, ge=1, description="clips per shard")
    seed: int = Field(0, description="seed of the augmentations and the validation split")

    @field_validator("buckets")
    @classmethod
    def _check_buckets(cls, value: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if not value:
            raise ValueError("give at least one bucket")
        for h, w in value:
            if h < 16 or w < 16 or h % LATENT_FACTOR or w % LATENT_FACTOR:
                raise ValueError(f"bucket {h}x{w}: sides must be multiples of {LATENT_FACTOR}, at least 16")
        return [tuple(map(int, b)) for b in value]


class CacheRuntime(ExecutorConfig):
    batch_size: int | None = Field(2, ge=1, description="clips per encoder call (frames are batched across them)")
    vae_chunk: int = Field(16, ge=1, description="images per VAE forward pass")
    device: str = Field("auto", description="encoder device (auto: a GPU when there is one)")
    resume: bool = Field(True, description="keep the samples and shards a previous run finished")
    progress: bool = Field(True, description="show a progress bar on a terminal")


class CacheJob(StrictModel):
    """A latent-cache config plus how to run it."""

    cache: CacheConfig = CacheConfig()
    runtime: CacheRuntime = CacheRuntime()

    def content_hash(self) -> str:
        return config_hash(self.cache)


@dataclass(frozen=True)
class EncoderSource:
    """Where the encoders come from (``anycharv.model.components.load_encoders``)."""

    weights: str | None = None
    preset: str | None = None
    vae: str | None = None
    image_encoder: str | None = None
