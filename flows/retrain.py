"""Prefect flow ``retrain``: new videos in, a better served model out (or the current one kept).

One round: preprocess the videos into the root's preprocessing output (videos done in earlier
rounds are skipped), cache the new clips into the root's latent cache, train stage 1 starting from
the served model (fine-tuning; the first round starts from ``init``/``unet2d``/``preset``), generate
the self-boost pairs, train stage 2, export, evaluate the new and the served model on the same
held-out clips, and promote the new one only if its score beats the served one's. The decision and
both scores are an artifact; the serving link is swapped atomically and every promoted model is kept
(``anycharv.serving``). A round with no new clip since the last finished round is skipped.

Layout under ``root``: ``preprocess/``, ``cache/``, ``rounds/<round_id>/`` (``train/``, ``boost/``,
``model/``, ``eval_new/``, ``eval_served/``, ``round.json``), ``models/``, ``serving`` (a link).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from pydantic import Field

from anycharv.atomic import atomic_write_json
from anycharv.config import StrictModel
from anycharv.errors import InputError
from anycharv.evaluation.config import EvalJob
from anycharv.evaluation.runner import is_better
from anycharv.flows.cache_latents import cache_latents
from anycharv.flows.evaluate import evaluate
from anycharv.flows.preprocess import preprocess
from anycharv.flows.train import export_run
from anycharv.flows.two_stage import TwoStageJob, two_stage
from anycharv.latent_cache.config import CacheJob, EncoderSource
from anycharv.latent_cache.identity import cache_encoder_source
from anycharv.latent_cache.layout import CacheLayout
from anycharv.output_paths import check_output_dir
from anycharv.preprocessing.inputs import expand_inputs
from anycharv.preprocessing.runtime import PreprocessJob
from anycharv.serving import ServingRoot


class PromotionConfig(StrictModel):
    min_delta: float = Field(0.0, ge=0.0, description="the new model must beat the served one by more than this "
                                                      "(in the evaluation metric's unit)")
    skip_without_new_clips: bool = Field(True, description="skip the round when the cache has no clip that the last "
                                                           "finished round did not have")


class RetrainJob(StrictModel):
    """Every step's config; overrides read ``two_stage.stage2.runtime.max_steps=500``, ``evaluate.eval.steps=10``."""

    preprocess: PreprocessJob = PreprocessJob()
    cache: CacheJob = CacheJob()
    two_stage: TwoStageJob = Field(default_factory=TwoStageJob)
    evaluate: EvalJob = EvalJob()
    promotion: PromotionConfig = PromotionConfig()


def clips_digest(cache_dir: str | Path) -> tuple[str, int]:
    """A digest of the cache's sample ids (and their count): what tells a round there is new data."""
    index = Path(cache_dir) / "shards" / "index.parquet"
    ids = sorted(pq.read_table(index, columns=["clip_id"]).column("clip_id").to_pylist()) if index.is_file() else []
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16], len(ids)


def encoder_source(cache_dir: str, encoders: str | None, preset: str | None) -> EncoderSource:
    """The cache's encoders: ``encoders`` or ``preset`` when given, else those the cache was made with
    in an earlier round (a later round needs neither)."""
    if encoders or preset:
        return EncoderSource(weights=encoders, preset=None if encoders else preset)
    if CacheLayout.at(cache_dir).encoders.is_file():
        return cache_encoder_source(cache_dir)
    raise InputError("encoders", "the first round needs the cache's encoders: a folder with vae/ and image_encoder/, "
                     "or preset tiny", code="no_encoders")


def last_round(root: Path) -> dict | None:
    """The record of the latest finished round, or None."""
    import json

    records = sorted((root / "rounds").glob("*/round.json"))
    for path in reversed(records):
        record = json.loads(path.read_text())
        if record.get("finished"):
            return record
    return None


@task(name="decide-promotion", cache_policy=NONE, persist_result=False)
def decide(root: str, round_id: str, new: dict[str, Any], served: dict[str, Any] | None, served_path: str | None,
           model_dir: str, min_delta: float) -> dict[str, Any]:
    """Promote when nothing is served yet or the new score beats the served one's by more than ``min_delta``."""
    higher = bool(new["higher_is_better"])
    if served is None:
        promote, why = True, "no model is served yet"
    elif new["score"] is None:
        promote, why = False, f"the new model has no {new['metric']} score"
    elif served["score"] is None:
        promote, why = True, f"the served model has no {served['metric']} score"
    else:
        promote = is_better(new["score"], served["score"], higher, min_delta)
        why = (f"{new['metric']} {new['score']:.4f} vs served {served['score']:.4f} "
               f"({'higher' if higher else 'lower'} is better, margin {min_delta:g})")
    decision = {"round_id": round_id, "promoted": promote, "reason": why, "metric": new["metric"],
                "higher_is_better": higher, "new_score": new["score"],
                "served_score": None if served is None else served["score"], "served_model": served_path,
                "new_model": model_dir}
    if promote:
        target = ServingRoot.at(root).promote(model_dir, round_id, {"metric": new["metric"], "score": new["score"],
                                                                     "previous": served_path})
        decision["serving"] = str(target)
    return decision


@task(name="publish-decision", cache_policy=NONE, persist_result=False)
def publish(decision: dict[str, Any]) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = [{"model": "new", "path": decision["new_model"], decision["metric"]: decision["new_score"]},
            {"model": "served", "path": decision["served_model"], decision["metric"]: decision["served_score"]}]
    create_table_artifact(table=rows, key="retrain-scores", description="The new and the served model's scores")
    verdict = "**promoted**" if decision["promoted"] else "**kept the served model**"
    lines = [f"# Retrain round {decision['round_id']}", "", f"{verdict}: {decision['reason']}", "",
             f"- new model: `{decision['new_model']}` ({decision['metric']} {decision['new_score']})",
             f"- served model before: `{decision['served_model']}` ({decision['metric']} {decision['served_score']})"]
    if decision.get("serving"):
        lines.append(f"- serving now: `{decision['serving']}`")
    create_markdown_artifact(markdown="\n".join(lines) + "\n", key="retrain-decision",
                             description="Promotion decision of the retrain round")


@flow(name="retrain", log_prints=True, persist_result=False, result_serializer="json")
def retrain(videos: list[str], root: str, init: str | None = None, unet2d: str | None = None,
            preset: str | None = None, encoders: str | None = None,
            config: RetrainJob = RetrainJob()) -> dict[str, Any]:
    """One retraining round on ``videos`` (paths, globs or folders) under ``root``. The first round
    (nothing served yet) starts from ``init``, ``unet2d`` or ``preset``; later ones from the served
    model. ``encoders``: a folder with ``vae/`` and ``image_encoder/`` for the cache (or ``preset``
    "tiny": random tiny ones)."""
    logger = get_run_logger()
    root_dir = check_output_dir(root, "root")
    serving = ServingRoot.at(root_dir)
    served = serving.current()
    start = {"init": str(served)} if served else {"init": init, "unet2d": unet2d, "preset": preset}
    if not any(start.values()):
        raise InputError("init", "nothing is served yet: give init, unet2d or preset for the first round",
                         code="no_init")
    if not any(Path(p).is_file() for p in expand_inputs(videos)):
        logger.info("retrain: no video matches %s; nothing to do", videos)
        return {"skipped": True, "reason": "no_videos", "serving": str(served) if served else None}

    prep, cache = str(root_dir / "preprocess"), str(root_dir / "cache")
    source = encoder_source(cache, encoders, preset)
    preprocess(videos, prep, config.preprocess)
    cache_latents(prep, cache, weights=source.weights, preset=source.preset, vae=source.vae,
                  image_encoder=source.image_encoder, config=config.cache)
    digest, clips = clips_digest(cache)
    previous = last_round(root_dir)
    if (config.promotion.skip_without_new_clips and served and previous
            and previous.get("clips_digest") == digest):
        logger.info("retrain: no new clip since round %s; the served model stays", previous["round_id"])
        return {"skipped": True, "reason": "no_new_clips", "serving": str(served), "clips": clips}

    round_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    round_dir = root_dir / "rounds" / round_id
    record = {"round_id": round_id, "clips_digest": digest, "clips": clips, "start": start, "finished": False}
    atomic_write_json(round_dir / "round.json", record)

    steps = config.two_stage.model_copy(deep=True)
    steps.stage2.train.data.boost_dir = str(round_dir / "boost")  # this round's stage-1 model makes its own pairs
    trained = two_stage(cache, str(round_dir / "train"), config=steps, **start)
    model_dir = export_run(trained["final_model"], str(round_dir / "model"))
    new_scores = evaluate(model_dir, cache, str(round_dir / "eval_new"), config.evaluate)
    served_scores = evaluate(str(served), cache, str(round_dir / "eval_served"), config.evaluate) if served else None
    decision = decide(str(root_dir), round_id, new_scores, served_scores, str(served) if served else None, model_dir,
                      config.promotion.min_delta)
    publish(decision)
    atomic_write_json(round_dir / "round.json", {**record, "finished": True, "decision": decision})
    logger.info("retrain %s: %s (%s)", round_id, "promoted" if decision["promoted"] else "kept", decision["reason"])
    return {"skipped": False, "round": str(round_dir), **decision}
