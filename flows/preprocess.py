"""Prefect flow ``preprocess``: raw videos -> per-clip annotations + Parquet manifest.

The parameters are typed (``inputs``, ``output``, ``config: PreprocessJob``), so the Prefect UI
renders a form for them. Tasks hand each other paths and small dicts only; the heavy work runs on
Ray inside ``run_clip_pipeline`` and is resumable, so retrying that task continues where it stopped.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pyarrow.parquet as pq
import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from anycharv.atomic import atomic_write_bytes
from anycharv.flows.artifacts import publish_artifacts, write_summary_file
from anycharv.flows.retry_policy import retry_unless_user_error
from anycharv.output_paths import check_output_dir
from anycharv.preprocessing.finalize import OutputLayout
from anycharv.preprocessing.inputs import require_inputs
from anycharv.preprocessing.manifest import write_manifest
from anycharv.preprocessing.runner import run_pipeline
from anycharv.preprocessing.runtime import PreprocessJob


@task(name="list-inputs", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_user_error,
      cache_policy=NONE, persist_result=False)
def list_inputs(inputs: list[str]) -> list[str]:
    """Expand globs and folders into absolute file paths (missing ones are kept, to be reported); no
    existing input at all is an error before any work starts."""
    sources = require_inputs(inputs)
    get_run_logger().info("%d input(s) from %d pattern(s)", len(sources), len(inputs))
    return sources


@task(name="run-clip-pipeline", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error,
      cache_policy=NONE, persist_result=False)
def run_clip_pipeline(sources: list[str], output: str, config: PreprocessJob) -> dict[str, Any]:
    """All clip stages on Ray; returns the run's counts and timings."""
    summary = run_pipeline(sources, output, config.stage_config(), config.runtime)
    return summary.to_dict()


@task(name="write-manifest", retries=2, retry_delay_seconds=2, cache_policy=NONE, persist_result=False)
def write_outputs(summary: dict[str, Any], config: PreprocessJob) -> dict[str, Any]:
    """Manifest (from the state records), the config used, the run summary and ``summary.md``."""
    layout = OutputLayout.create(summary["output"], config.runtime.work_dir)
    manifest = write_manifest(layout, summary["config_hash"])
    atomic_write_bytes(layout.manifest_dir / "config.yaml",
                       yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode())
    atomic_write_bytes(layout.manifest_dir / "run.json", json.dumps(summary, indent=1).encode())
    markdown = write_summary_file(summary, str(manifest))
    rows = pq.read_table(manifest, columns=["kind", "status", "reason"]).to_pylist()
    reasons = Counter(r["reason"] for r in rows if r["status"] == "rejected")
    counts = {
        "rows": len(rows),
        "clips_ok": sum(r["kind"] == "clip" and r["status"] == "ok" for r in rows),
        "clips_rejected": sum(r["kind"] == "clip" and r["status"] == "rejected" for r in rows),
        "inputs_rejected": sum(r["kind"] == "input" for r in rows),
    }
    return {"manifest": str(manifest), "summary_md": str(markdown), "counts": counts,
            "reasons": dict(sorted(reasons.items()))}


@task(name="publish-artifacts", cache_policy=NONE, persist_result=False)
def publish(summary: dict[str, Any], manifest: str) -> dict[str, str]:
    return publish_artifacts(summary, manifest)


# Results are small dicts handed on in memory; nothing is persisted (the output folder is the
# record). Prefect still writes a failed flow's exception to its result storage, whatever
# persist_result says: as JSON (type and message), never as a pickle.
@flow(name="preprocess", log_prints=True, persist_result=False, result_serializer="json")
def preprocess(inputs: list[str], output: str, config: PreprocessJob = PreprocessJob()) -> dict[str, Any]:
    """Preprocess videos (paths, globs or folders in ``inputs``) into ``output``: per-clip annotations
    under ``output/clips/<clip_id>/`` and the manifest ``output/manifest/clips.parquet``.

    Reruns skip finished inputs and clips; a killed run resumes where it stopped.
    """
    output = str(check_output_dir(output, "output"))  # a bad output fails here, not after the work
    sources = list_inputs(inputs)
    summary = run_clip_pipeline(sources, output, config)
    paths = write_outputs(summary, config)
    publish(summary, paths["manifest"])
    result = {
        "output": summary["output"],
        "manifest": paths["manifest"],
        "summary_md": paths["summary_md"],
        "config_hash": summary["config_hash"],
        "inputs": summary["inputs"],
        "inputs_rejected": summary["inputs_rejected"],
        "clips_ok": summary["clips_ok"],
        "clips_rejected": summary["clips_rejected"],
        "clips_skipped": summary["clips_skipped"],
        "frames_per_s": round(summary["frames_per_s"], 3),
        "reasons": summary["reasons"],
        "duplicates": summary["duplicates"],
        "clips_short": summary["clips_short"],
        "ray_started": summary["ray_started"],
        "manifest_counts": paths["counts"],
        "manifest_reasons": paths["reasons"],
    }
    get_run_logger().info("preprocess done: %s", result)
    return result
