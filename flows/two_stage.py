"""Prefect flow ``two_stage``: the whole AnyCharV recipe on one latent cache.

stage 1 image -> stage 1 video -> self-boost pairs -> stage 2, each a subflow with its own run folder
under ``output`` (``stage1_image/``, ``stage1_video/``, ``stage2/``; the pairs go where stage 2
looks, ``data/shards/boost`` unless ``config.stage2.train.data.boost_dir`` says otherwise). Every
step resumes what a previous run left and is skipped when its output is complete (a training run at
its ``max_steps``, a self-boost folder whose shards are all written). Each stage starts from the
previous one: stage 1 video from stage 1 image, self-boost and stage 2 from stage 1 video.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from pydantic import Field, model_validator

from anycharv.config import CONFIG_DIR, StrictModel, load_config, merge_into
from anycharv.flows.self_boost import self_boost
from anycharv.flows.train import train
from anycharv.output_paths import check_output_dir
from anycharv.self_boost.config import BoostJob
from anycharv.training.config import TrainJob


def stage_defaults(stage: str) -> TrainJob:
    """The stage's job as ``configs/train/<stage>.yaml`` gives it."""
    path = CONFIG_DIR / "train" / f"{stage}.yaml"
    return load_config(TrainJob, path if path.is_file() else None, [f"train.stage={stage}"])


def boost_defaults() -> BoostJob:
    path = CONFIG_DIR / "self_boost.yaml"
    return load_config(BoostJob, path if path.is_file() else None)


class TwoStageJob(StrictModel):
    """One job per step; overrides read ``stage1_image.runtime.max_steps=500``, ``self_boost.boost.steps=10``."""

    stage1_image: TrainJob = Field(default_factory=lambda: stage_defaults("stage1_image"))
    stage1_video: TrainJob = Field(default_factory=lambda: stage_defaults("stage1_video"))
    self_boost: BoostJob = Field(default_factory=boost_defaults)
    stage2: TrainJob = Field(default_factory=lambda: stage_defaults("stage2"))

    @model_validator(mode="before")
    @classmethod
    def _over_step_defaults(cls, data: Any) -> Any:
        """A step given in part (``stage2.runtime.max_steps=30``, a YAML section) keeps the rest of its
        own defaults (``configs/train/stage2.yaml``), not the plain ``TrainJob()`` ones."""
        if not isinstance(data, dict):
            return data
        defaults = {"stage1_image": lambda: stage_defaults("stage1_image"),
                    "stage1_video": lambda: stage_defaults("stage1_video"), "self_boost": boost_defaults,
                    "stage2": lambda: stage_defaults("stage2")}
        return {name: merge_into(defaults[name]().model_dump(mode="json"), value)
                if name in defaults and isinstance(value, dict) else value for name, value in data.items()}


def _chained(job: TrainJob, stage: str, start: dict[str, Any]) -> TrainJob:
    """``job`` with its stage fixed and its start replaced by ``start``."""
    init = job.train.init.model_copy(update={"preset": None, "model": None, "unet2d": None, **start})
    return job.model_copy(update={"train": job.train.model_copy(update={"stage": stage, "init": init})}, deep=True)


@flow(name="two_stage", log_prints=True, persist_result=False, result_serializer="json")
def two_stage(data: str, output: str, init: str | None = None, preset: str | None = None, unet2d: str | None = None,
              config: TwoStageJob = TwoStageJob()) -> dict[str, Any]:
    """Train both AnyCharV stages on the latent cache ``data`` into ``output``. Stage 1 starts from
    ``init`` (a model or run folder), ``unet2d`` (SD-1.5 UNet weights) or ``preset`` ("tiny")."""
    root = check_output_dir(output, "output")
    start = {k: v for k, v in (("model", init), ("preset", preset), ("unet2d", unet2d)) if v}
    runs = {name: str(Path(root) / name) for name in ("stage1_image", "stage1_video", "stage2")}
    results: dict[str, Any] = {}
    results["stage1_image"] = train(data, runs["stage1_image"], _chained(config.stage1_image, "stage1_image", start))
    results["stage1_video"] = train(data, runs["stage1_video"],
                                    _chained(config.stage1_video, "stage1_video", {"model": runs["stage1_image"]}))
    boost_dir = config.stage2.train.data.boost_dir
    results["self_boost"] = self_boost(data, model=runs["stage1_video"], output=boost_dir, config=config.self_boost)
    stage2 = _chained(config.stage2, "stage2", {"model": runs["stage1_video"]})
    results["stage2"] = train(data, runs["stage2"], stage2)
    get_run_logger().info("two_stage done: %s", {k: v.get("final_step", v.get("samples")) for k, v in results.items()})
    return {"runs": runs, "final_model": runs["stage2"], **results}
