"""Prefect flow ``evaluate``: a model and a latent cache -> self-reconstruction scores of held-out clips.

Typed parameters (``model``, ``data``, ``output``, ``config: EvalJob``) give the UI a form. The
inputs are checked before any task runs (a bad one fails the run with its message, no retry); the
scoring runs on the executor inside ``score-clips``, which retries once on a transient failure
(it starts over: scoring keeps no partial state). Artifacts: ``evaluation-metrics`` (a table of the
aggregate metrics with the clips and samples behind each) and ``evaluation-summary`` (markdown:
the aggregate, the per-clip table, skipped metrics and warnings, preview thumbnails).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from anycharv.evaluation.config import EvalJob
from anycharv.evaluation.runner import CLIP_METRICS, check_inputs, run_evaluation
from anycharv.flows.artifacts import thumbnail_data_uri
from anycharv.flows.retry_policy import retry_unless_user_error

MAX_CLIP_ROWS = 100  # per-clip rows in the markdown artifact (every clip is in clips.parquet)
MAX_THUMBNAILS = 4
SUMMARY_KEYS = ("model", "data", "split_used", "clips", "rejected", "metric", "score", "total_s")


@task(name="score-clips", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error,
      cache_policy=NONE, persist_result=False)
def score_clips(model: str, data: str, output: str, config: EvalJob) -> dict[str, Any]:
    return asdict(run_evaluation(config, model, data, output))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def metric_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``aggregate.parquet``: metric, value, clips, samples, higher_is_better."""
    return pq.read_table(summary["aggregate_parquet"]).to_pylist()


def summary_markdown(summary: dict[str, Any]) -> str:
    direction = "higher" if summary["higher_is_better"] else "lower"
    lines = ["# Evaluation", "", f"- model: `{summary['model']}`", f"- cache: `{summary['data']}` (split "
             f"{summary['split_used']}, condition {summary['condition']}, {summary['num_frames']} frames, "
             f"{summary['steps']} steps, guidance {summary['guidance']})",
             f"- **{summary['metric']}: {_cell(summary['score'])}** ({direction} is better) over "
             f"{summary['clips']} of {summary['planned']} clips",
             f"- files: `{summary['clips_parquet']}`, `{summary['aggregate_parquet']}`", ""]
    if summary["warnings"]:
        lines += ["## Warnings", "", *[f"- {w}" for w in summary["warnings"]], ""]
    lines += ["## Aggregate", "", *_table(metric_rows(summary), ["metric", "value", "clips", "samples",
                                                                 "higher_is_better"]), ""]
    if summary["metrics_skipped"]:
        lines += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in summary["metrics_skipped"].items()), ""]
    clips = pq.read_table(summary["clips_parquet"]).to_pylist()
    shown = [c for c in CLIP_METRICS if c in summary["metrics_available"]]
    lines += ["## Clips", "", *_table(clips[:MAX_CLIP_ROWS], ["clip_id", "bucket", "frames", "status", "reason",
                                                              *shown]), ""]
    if len(clips) > MAX_CLIP_ROWS:
        lines += [f"_{len(clips) - MAX_CLIP_ROWS} more in clips.parquet_", ""]
    lines += ["## Previews", "", "Target (the clip's cached latents decoded, top) over the self-reconstruction "
              "(bottom):", ""]
    if not summary["previews"]:
        lines.append("_no preview_")
    for path in summary["previews"][:MAX_THUMBNAILS]:
        if Path(path).is_file():
            lines += [f"![{Path(path).stem}]({thumbnail_data_uri(Path(path), height=160)})", f"`{Path(path).stem}`",
                      ""]
    return "\n".join(lines) + "\n"


@task(name="publish-artifacts", cache_policy=NONE, persist_result=False)
def publish(summary: dict[str, Any]) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = metric_rows(summary) or [{"metric": "(none)", "value": None, "clips": 0, "samples": 0,
                                     "higher_is_better": None}]
    create_table_artifact(table=rows, key="evaluation-metrics", description=f"Self-reconstruction metrics of "
                          f"{summary['model']} (primary: {summary['metric']})")
    create_markdown_artifact(markdown=summary_markdown(summary), key="evaluation-summary",
                             description="Evaluation summary with per-clip scores and previews")


@flow(name="evaluate", log_prints=True, persist_result=False, result_serializer="json")
def evaluate(model: str, data: str, output: str, config: EvalJob = EvalJob()) -> dict[str, Any]:
    """Score ``model`` (an exported folder, a training run or a checkpoint) on held-out clips of the
    latent cache ``data`` by self-reconstruction (each clip's own character as the reference, the
    box-mask condition, compared with the clip's cached frames); files under ``output``."""
    check_inputs(config, model, data, output)  # a bad input fails the run here, not after a retry
    summary = score_clips(model, data, output, config)
    publish(summary)
    get_run_logger().info("evaluate done: %s", {k: summary[k] for k in SUMMARY_KEYS})
    return summary
