"""Prefect flow ``self_boost``: a latent cache and a stage-1 model -> self-boost shards (each clip
re-generated with another video's character), the inputs of stage-2 training.

Typed parameters (``data``, ``model`` or ``preset``, ``output``, ``vae``, ``config: BoostJob``)
give the UI a form. The generation runs on the executor inside ``generate-pairs`` and is
resumable, so a retry of that task continues where it stopped. Artifacts: the counts and
throughput, and a summary with a thumbnail and a link per preview video.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from anycharv.flows.artifacts import thumbnail_data_uri
from anycharv.flows.retry_policy import retry_unless_user_error
from anycharv.output_paths import check_output_dir
from anycharv.self_boost.config import BoostJob
from anycharv.self_boost.layout import default_output
from anycharv.self_boost.model_source import resolve_model
from anycharv.self_boost.runner import run_self_boost

COUNT_KEYS = ("clips", "generated", "reused", "samples", "shards", "shards_written", "shards_unfinished", "frames",
              "cross_bucket", "clips_per_s", "frames_per_s", "generate_s", "total_s")


@task(name="generate-pairs", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error,
      cache_policy=NONE, persist_result=False)
def generate_pairs(data: str, model: str | None, preset: str | None, output: str, vae: str | None,
                   config: BoostJob) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(run_self_boost(config, data, resolve_model(model, preset), output, vae=vae))


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = ["# Self-boost pairs", "", f"- output: `{summary['output']}`", f"- cache: `{summary['cache']}`",
             f"- model: `{summary['model']}`",
             f"- {summary['samples']} samples in {summary['shards']} shards (splits {summary['splits']})",
             f"- this run: {summary['generated']} clips generated ({summary['clips_per_s']} clips/s, "
             f"{summary['frames_per_s']} frames/s), {summary['reused']} reused, "
             f"{summary['cross_bucket']} with a reference from another bucket", ""]
    rejected = summary["rejected_clips"]
    if rejected:
        lines += ["## Rejected clips", "", "| clip | reason | detail |", "|---|---|---|"]
        lines += [f"| `{r['clip_id']}` | {r['reason']} | {r['detail']} |" for r in rejected[:50]]
        lines.append("")
    lines += ["## Previews", "", "Original (left), generated with another video's character (middle), that "
              "character's reference (right):", ""]
    if not summary["previews"]:
        lines.append("_no preview_")
    for video in summary["previews"]:
        still = Path(video).with_suffix(".png")
        if still.is_file():
            lines.append(f"![{Path(video).stem}]({thumbnail_data_uri(still, height=160)})")
        lines += [f"[`{Path(video).name}`]({Path(video).as_uri()})", ""]
    return "\n".join(lines) + "\n"


@task(name="publish-artifacts", cache_policy=NONE, persist_result=False)
def publish(summary: dict[str, Any]) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = [{"figure": k, "value": summary[k]} for k in COUNT_KEYS]
    rows += [{"figure": f"split {k}", "value": v} for k, v in sorted(summary["splits"].items())]
    rows += [{"figure": f"rejected {k}", "value": v} for k, v in sorted(summary["rejected"].items())]
    create_table_artifact(table=rows, key="self-boost-counts", description="Self-boost counts and throughput")
    create_markdown_artifact(markdown=summary_markdown(summary), key="self-boost-summary",
                             description="Self-boost summary with preview videos")


@flow(name="self_boost", log_prints=True, persist_result=False, result_serializer="json")
def self_boost(data: str, model: str | None = None, preset: str | None = None, output: str | None = None,
               vae: str | None = None, config: BoostJob = BoostJob()) -> dict[str, Any]:
    """Re-generate every clip of the latent cache ``data`` with the stage-1 ``model`` (a training
    run, a checkpoint or an exported folder; or ``preset`` "tiny": random tiny networks) and another
    source video's character, into ``output`` (default ``data/shards/boost``, where stage-2
    training looks). ``vae``: a VAE folder instead of the cache's own."""
    resolve_model(model, preset)  # a bad model fails the run here, not after a retry
    output = str(check_output_dir(output or default_output(data), "output"))
    summary = generate_pairs(data, model, preset, output, vae, config)
    publish(summary)
    get_run_logger().info("self_boost done: %s", {k: summary[k] for k in COUNT_KEYS})
    return summary
