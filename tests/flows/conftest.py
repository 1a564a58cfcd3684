"""Overrides that make the composite flows (``retrain``, ``pipeline``) quick on 2 CPU cores: small
preprocessing, one 64x64 bucket, a few in-process training steps, 2-step sampling."""

from __future__ import annotations

import pytest

# 384/512: at 256 px the pose2sim person's masks fail the filters (mask_empty, mask_outside_box)
PREPROCESS = ["decode.short_side=384", "split.clip_len=8", "split.min_len=8", "split.stride=48",
              "split.max_clips_per_video=1", "mask.size=512",
              "filter.people_rule=main_dominant", "preview.enabled=false", "runtime.executor=local",
              "runtime.progress=false"]
STEP = ["train.data.batch_size=1", "train.data.num_frames=4", "runtime.launcher=local",
        "runtime.validation.enabled=false", "runtime.checkpoint.every=100", "runtime.log_every=100"]


@pytest.fixture(scope="session")
def tiny_steps() -> list[str]:
    """Overrides of the steps every composite job has (preprocess, cache, two_stage, evaluate)."""
    steps = [f"two_stage.{stage}.{key}" for stage in ("stage1_image", "stage1_video", "stage2") for key in STEP]
    return [
        *[f"preprocess.{o}" for o in PREPROCESS], "cache.cache.buckets=[[64,64]]", "cache.cache.val_fraction=0.5",
        "cache.runtime.executor=local", "cache.runtime.progress=false", *steps,
        "two_stage.stage1_image.runtime.max_steps=4", "two_stage.stage1_video.runtime.max_steps=2",
        "two_stage.stage2.runtime.max_steps=2", "two_stage.self_boost.boost.steps=2",
        "two_stage.self_boost.boost.context_frames=4", "two_stage.self_boost.boost.context_overlap=1",
        "two_stage.self_boost.runtime.executor=local", "two_stage.self_boost.runtime.progress=false",
        "evaluate.eval.steps=2", "evaluate.eval.num_frames=4", "evaluate.runtime.executor=local"]
