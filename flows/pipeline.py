"""Prefect flow ``pipeline``: the main job end to end, raw videos in, replaced characters out.

preprocess -> cache latents -> two-stage training with self-boosting -> export -> evaluate ->
batch inference of ``references`` x ``videos`` with the new model. Every step is the project's own
flow (a subflow run in the UI with its artifacts) and resumes what a previous run left, so a rerun
after a failure redoes only what did not finish. ``make demo`` runs it with the tiny preset.

Layout under ``output``: ``preprocess/``, ``cache/``, ``train/``, ``model/``, ``evaluation/``
(``evaluation/start/``: the untrained start, when ``config.evaluate_start``), ``batch/``
(``jobs.csv``, ``results.parquet``, the videos) and ``pipeline-summary.json``.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from pydantic import Field

from anycharv.atomic import atomic_path, atomic_write_json
from anycharv.config import StrictModel
from anycharv.errors import InputError
from anycharv.evaluation.config import EvalJob
from anycharv.flows.batch_infer import batch_infer
from anycharv.flows.cache_latents import cache_latents
from anycharv.flows.evaluate import evaluate
from anycharv.flows.preprocess import preprocess
from anycharv.flows.train import export_run
from anycharv.flows.two_stage import TwoStageJob, two_stage
from anycharv.inference.batch_config import BatchJob
from anycharv.latent_cache.config import CacheJob
from anycharv.output_paths import check_output_dir
from anycharv.preprocessing.inputs import require_inputs
from anycharv.preprocessing.runtime import PreprocessJob
from anycharv.training.export import export_start


class JobsConfig(StrictModel):
    max_jobs: int = Field(4, ge=1, description="batch jobs made from references x videos (in that order)")


class PipelineJob(StrictModel):
    """Every step's config; overrides read ``two_stage.stage2.runtime.max_steps=50``, ``batch.batch.steps=4``."""

    preprocess: PreprocessJob = PreprocessJob()
    cache: CacheJob = CacheJob()
    two_stage: TwoStageJob = Field(default_factory=TwoStageJob)
    evaluate: EvalJob = EvalJob()
    evaluate_start: bool = Field(True, description="also score the untrained start (with preset only): the "
                                                   "trained model's margin over it is what training bought")
    batch: BatchJob = BatchJob()
    jobs: JobsConfig = JobsConfig()


@task(name="export-start", cache_policy=NONE, persist_result=False)
def export_start_task(cache_dir: str, output: str, preset: str, seed: int) -> str:
    return str(export_start(cache_dir, output, preset=preset, seed=seed))


@task(name="write-batch-jobs", cache_policy=NONE, persist_result=False)
def write_jobs(references: list[str], videos: list[str], path: str, max_jobs: int) -> str:
    """``path``: one job per (reference, video) pair, at most ``max_jobs``."""
    pairs = list(itertools.islice(itertools.product(references, videos), max_jobs))
    with atomic_path(path, keep_suffix=True) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["job_id", "reference", "video"])
        for i, (reference, video) in enumerate(pairs):
            writer.writerow([f"{i:02d}-{Path(reference).stem}-{Path(video).stem}", reference, video])
    return path


@flow(name="pipeline", log_prints=True, persist_result=False, result_serializer="json")
def pipeline(videos: list[str], references: list[str], output: str, init: str | None = None,
             unet2d: str | None = None, preset: str | None = None, encoders: str | None = None,
             config: PipelineJob = PipelineJob()) -> dict[str, Any]:
    """Train on ``videos`` (paths, globs or folders) into ``output`` and replace their people with the
    characters of ``references`` (images). Training starts from ``init`` (a model or run folder),
    ``unet2d`` (SD-1.5 UNet weights) or ``preset`` ("tiny"); the cache's encoders come from ``encoders``
    (a folder with ``vae/`` and ``image_encoder/``) or the preset."""
    if not (init or unet2d or preset):
        raise InputError("init", "give init, unet2d or preset", code="no_init")
    missing = [r for r in references if not Path(r).is_file()]
    if not references or missing:
        raise InputError("references", f"reference image(s) not found: {missing}" if missing else "none given",
                         code="not_found")
    root = check_output_dir(output, "output")
    sources = [s for s in require_inputs(videos) if Path(s).is_file()]
    out = {name: str(root / name) for name in ("preprocess", "cache", "train", "model", "evaluation", "batch")}

    prep = preprocess(videos, out["preprocess"], config.preprocess)
    cache = cache_latents(out["preprocess"], out["cache"], weights=encoders, preset=preset if not encoders else None,
                          config=config.cache)
    trained = two_stage(out["cache"], out["train"], init=init, preset=preset, unet2d=unet2d, config=config.two_stage)
    model_dir = export_run(trained["final_model"], out["model"])
    scores = evaluate(model_dir, out["cache"], out["evaluation"], config.evaluate)
    start_scores = None
    if preset and config.evaluate_start:
        start_dir = export_start_task(out["cache"], str(root / "evaluation" / "start-model"), preset,
                                      config.two_stage.stage1_image.train.init.seed)
        start_scores = evaluate(start_dir, out["cache"], str(root / "evaluation" / "start"), config.evaluate)
    jobs = write_jobs([str(Path(r).resolve()) for r in references], sources, str(root / "batch" / "jobs.csv"),
                      config.jobs.max_jobs)
    batch = batch_infer(jobs, out["batch"], weights=model_dir, config=config.batch)

    summary = {
        "output": str(root), **{f"{k}_dir": v for k, v in out.items()},
        "manifest": prep["manifest"], "clips_ok": prep["manifest_counts"]["clips_ok"],
        "cache_samples": cache["samples"], "cache_splits": cache["splits"],
        "runs": trained["runs"], "model": model_dir, "self_boost": trained["self_boost"].get("output"),
        "evaluation": {"metric": scores["metric"], "score": scores["score"], "aggregate": scores["aggregate"]},
        "evaluation_start": None if start_scores is None else {"score": start_scores["score"],
                                                               "aggregate": start_scores["aggregate"]},
        "batch_results": batch["results"], "batch_ok": batch["ok"], "batch_jobs": batch["jobs"],
        "batch_outputs": batch["outputs"], "batch_previews": batch["previews"],
    }
    atomic_write_json(root / "pipeline-summary.json", summary)
    get_run_logger().info("pipeline done: model %s, %s %s, %s/%s batch jobs ok", model_dir, scores["metric"],
                          scores["score"], batch["ok"], batch["jobs"])
    return summary
