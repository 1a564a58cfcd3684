"""Prefect flow ``cache_latents``: a preprocessing output's ok clips -> VAE/CLIP latent shards.

Typed parameters (``input``, ``output``, the encoder source, ``config: CacheJob``) give the UI a
form. The encoding runs on the executor inside ``encode-clips`` and is resumable, so a retry of that
task continues where it stopped. Artifacts: the counts, bytes per sample and throughput, and a
decoded preview strip of one sample under its source frames.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from anycharv.flows.artifacts import thumbnail_data_uri
from anycharv.flows.retry_policy import retry_unless_user_error
from anycharv.latent_cache.config import CacheJob, EncoderSource
from anycharv.latent_cache.layout import CacheLayout
from anycharv.latent_cache.runner import run_cache
from anycharv.output_paths import check_output_dir

COUNT_KEYS = ("clips", "encoded", "reused", "samples", "shards", "shards_written", "frames", "bytes_per_sample",
              "clips_per_s", "frames_per_s", "encode_s", "total_s")


@task(name="encode-clips", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error,
      cache_policy=NONE, persist_result=False)
def encode_clips(input: str, output: str, source: EncoderSource, config: CacheJob) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(run_cache(config, input, output, source))


@task(name="preview-sample", cache_policy=NONE, persist_result=False)
def preview_sample(output: str, source: EncoderSource) -> str | None:
    """Decode one sample with the same VAE; None when the cache is empty."""
    from anycharv.latent_cache.preview import write_preview
    from anycharv.model.components import load_encoders

    layout = CacheLayout.at(output)
    if not layout.index.is_file():
        return None
    vae = load_encoders(source.weights, preset=source.preset, vae=source.vae,
                        image_encoder=source.image_encoder)["vae"]
    return str(write_preview(layout.shards, vae, layout.root / "preview.png"))


@task(name="publish-artifacts", cache_policy=NONE, persist_result=False)
def publish(summary: dict[str, Any], preview: str | None) -> None:
    from pathlib import Path

    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = [{"figure": k, "value": summary[k]} for k in COUNT_KEYS]
    rows += [{"figure": f"split {k}", "value": v} for k, v in sorted(summary["splits"].items())]
    rows += [{"figure": f"rejected {k}", "value": v} for k, v in sorted(summary["rejected"].items())]
    create_table_artifact(table=rows, key="cache-latents-counts", description="Latent cache counts and throughput")
    lines = ["# Latent cache", "", f"- output: `{summary['output']}`",
             f"- {summary['samples']} samples in {summary['shards']} shards, "
             f"{summary['bytes_per_sample'] / 1e6:.2f} MB per sample",
             f"- this run: {summary['encoded']} clips encoded ({summary['clips_per_s']} clips/s, "
             f"{summary['frames_per_s']} frames/s), {summary['reused']} reused", ""]
    if preview:
        lines += ["Source frames (top), decoded latents, decoded stage-1 input (bottom):", "",
                  f"![preview]({thumbnail_data_uri(Path(preview), height=360)})"]
    create_markdown_artifact(markdown="\n".join(lines) + "\n", key="cache-latents-summary",
                             description="Latent cache summary with a decoded sample")


@flow(name="cache_latents", log_prints=True, persist_result=False, result_serializer="json")
def cache_latents(input: str, output: str, weights: str | None = None, preset: str | None = None,
                  vae: str | None = None, image_encoder: str | None = None,
                  config: CacheJob = CacheJob()) -> dict[str, Any]:
    """Cache the ok clips of the preprocessing output ``input`` as training shards in ``output``
    (``output/shards/``, ``output/shards/index.parquet``). The encoders come from ``weights`` (with
    optional ``vae`` / ``image_encoder`` folders) or ``preset`` ("tiny": random tiny ones)."""
    output = str(check_output_dir(output, "output"))
    source = EncoderSource(weights=weights, preset=preset, vae=vae, image_encoder=image_encoder)
    summary = encode_clips(input, output, source, config)
    preview = preview_sample(output, source)
    publish(summary, preview)
    summary["preview"] = preview
    get_run_logger().info("cache_latents done: %s", {k: summary[k] for k in COUNT_KEYS})
    return summary
