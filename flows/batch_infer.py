"""Prefect flow ``batch_infer``: a job table (CSV or Parquet: ``job_id``, ``reference``, ``video``,
optional ``person``, ``steps``, ``guidance``, ``seed``, ``size``, ``start``, ``max_frames``,
``output``) -> one mp4 per job under ``output/videos/`` and ``output/results.parquet``.

Typed parameters (``jobs``, ``output``, ``weights`` or ``preset``, ``config: BatchJob``) give the UI
a form. The jobs run on the executor inside ``run-jobs``; finished jobs are skipped by a rerun, so a
retry of that task continues where it stopped. Artifacts: ``batch-results`` (one row per job) and
``batch-summary`` (counts, links to the outputs, preview thumbnails).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from anycharv.flows.artifacts import thumbnail_data_uri
from anycharv.flows.retry_policy import retry_unless_user_error
from anycharv.inference.batch_config import BatchJob
from anycharv.inference.batch_jobs import read_job_table
from anycharv.inference.batch_runner import check_model, check_model_files, run_batch
from anycharv.output_paths import check_output_dir

COUNT_KEYS = ("jobs", "ok", "rejected", "failed", "reused", "ran", "frames", "jobs_per_hour", "seconds_per_frame",
              "run_s", "total_s")
MAX_THUMBNAILS = 24  # data URIs keep the artifact self-contained; a few dozen keep it small
MAX_LINKS = 500


@task(name="run-jobs", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error,
      cache_policy=NONE, persist_result=False)
def run_jobs(jobs: str, output: str, weights: str | None, preset: str | None, config: BatchJob) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(run_batch(config, jobs, output, weights=weights, preset=preset))


def _cell(value: Any) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = ["# Batch inference", "", f"- job table: `{summary['jobs_file']}`", f"- output: `{summary['output']}`",
             f"- results: [`{Path(summary['results']).name}`]({Path(summary['results']).as_uri()})",
             f"- model: `{summary['model']}`",
             f"- {summary['jobs']} jobs: {summary['ok']} ok, {summary['rejected']} rejected, {summary['failed']} "
             f"failed; {summary['reused']} already done (skipped)",
             f"- this run: {summary['ran']} jobs, {summary['frames']} frames, {summary['jobs_per_hour']} jobs/h, "
             f"{summary['seconds_per_frame']} s per output frame", ""]
    problems = [r for r in summary["rows"] if r["status"] != "ok"]
    if problems:
        lines += ["## Jobs not done", "", "| job | status | reason | detail |", "|---|---|---|---|"]
        lines += [f"| `{_cell(r['job_id'])}` | {r['status']} | {_cell(r['reason'])} | {_cell(r['detail'])} |"
                  for r in problems[:MAX_LINKS]]
        lines.append("")
    lines += ["## Outputs", "", "Each preview: source | result | reference, at the middle frame.", ""]
    done = [r for r in summary["rows"] if r["status"] == "ok"]
    if not done:
        lines.append("_no output_")
    for index, (row, video, preview) in enumerate(zip(done, summary["outputs"], summary["previews"])):
        if index >= MAX_LINKS:
            lines.append(f"... and {len(done) - MAX_LINKS} more (see `{summary['results']}`)")
            break
        if preview and index < MAX_THUMBNAILS and Path(preview).is_file():
            lines.append(f"![{_cell(row['job_id'])}]({thumbnail_data_uri(Path(preview), height=128)})")
        lines += [f"[`{row['output']}`]({Path(video).as_uri()}) (job `{_cell(row['job_id'])}`, {row['frames']} "
                  f"frames)", ""]
    return "\n".join(lines) + "\n"


@task(name="publish-artifacts", cache_policy=NONE, persist_result=False)
def publish(summary: dict[str, Any]) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    table = [{k: r[k] for k in ("job_id", "status", "reason", "detail", "output", "seconds", "frames")}
             for r in summary["rows"]]
    create_table_artifact(table=table, key="batch-results", description="One row per job of the table")
    create_markdown_artifact(markdown=summary_markdown(summary), key="batch-summary",
                             description="Batch inference: counts, outputs and previews")


@flow(name="batch_infer", log_prints=True, persist_result=False, result_serializer="json")
def batch_infer(jobs: str, output: str, weights: str | None = None, preset: str | None = None,
                config: BatchJob = BatchJob()) -> dict[str, Any]:
    """Run every job of the table ``jobs`` into the folder ``output`` with ``weights`` (converted
    component folders, or an official release folder / hub id) or ``preset`` "tiny" (random tiny
    weights). Results per job in ``output/results.parquet``; a rerun skips finished jobs."""
    check_model(weights, preset)  # what fails the whole run fails it here, not after a retry
    check_model_files(config)
    read_job_table(jobs)
    output = str(check_output_dir(output, "output"))
    summary = run_jobs(jobs, output, weights, preset, config)
    publish(summary)
    get_run_logger().info("batch_infer done: %s", {k: summary[k] for k in COUNT_KEYS})
    return summary
