"""The Prefect flow ``cache_latents`` (real Prefect harness) and the ``anycharv cache`` command (its
own temporary Prefect API, the default Ray backend on a fresh local cluster)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

SMALL = ["cache.buckets=[[80,48],[48,80]]", "runtime.progress=false", "cache.val_fraction=0.3"]


def _make_prep_output(root: Path) -> Path:
    path = Path(__file__).resolve().parents[1] / "latent_cache" / "prep_output.py"
    spec = importlib.util.spec_from_file_location("anycharv_test_prep_output_flows", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_prep_output(root)


def test_flow_caches_and_publishes_counts_and_a_decoded_preview(prefect_harness, tmp_path):
    from prefect.artifacts import Artifact

    from anycharv.config import load_config
    from anycharv.flows.cache_latents import cache_latents
    from anycharv.latent_cache.config import CacheJob

    prep = _make_prep_output(tmp_path / "prep")
    job = load_config(CacheJob, None, SMALL + ["runtime.executor=local"])
    result = cache_latents(input=str(prep), output=str(tmp_path / "cache"), preset="tiny", config=job)
    assert result["samples"] == 6 and result["encoded"] == 6 and set(result["splits"]) == {"train", "val"}
    counts = {row["figure"]: row["value"] for row in json.loads(Artifact.get("cache-latents-counts").data)}
    assert counts["samples"] == 6 and counts["bytes_per_sample"] == result["bytes_per_sample"] > 0
    assert counts["clips_per_s"] > 0
    summary = Artifact.get("cache-latents-summary").data
    assert "# Latent cache" in summary and summary.count("data:image/png;base64,") == 1
    with Image.open(result["preview"]) as im:
        strip = np.asarray(im.convert("RGB"))
    first = sorted(pq.read_table(tmp_path / "cache" / "shards" / "index.parquet").to_pylist(),
                   key=lambda r: (r["shard"], r["clip_id"]))[0]
    h, w = map(int, first["bucket"].split("x"))
    # Three rows (source frames, decoded latents, decoded stage-1 input) of four frames.
    assert strip.shape[:2] == (3 * h, 4 * w) and strip[:h].std() > 10


@pytest.mark.slow
def test_cli_cache_on_ray_then_a_rerun_does_no_work(tmp_path):
    prep = _make_prep_output(tmp_path / "prep")
    out = tmp_path / "cache"
    cmd = [sys.executable, "-m", "anycharv.cli", "cache", "--input", str(prep), "--output", str(out),
           "--preset", "tiny", *SMALL, "runtime.num_cpus=2"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "6 samples" in first.stdout and "6 clips encoded" in first.stdout
    assert json.loads((out / "summary.json").read_text())["ray_started"] is True
    index = pq.read_table(out / "shards" / "index.parquet")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 clips encoded" in again.stdout
    assert json.loads((out / "summary.json").read_text())["ray_started"] is False
    assert pq.read_table(out / "shards" / "index.parquet").equals(index)


def test_cli_refuses_a_folder_without_manifest_before_starting_anything(tmp_path):
    cmd = [sys.executable, "-m", "anycharv.cli", "cache", "--input", str(tmp_path), "--output",
           str(tmp_path / "out"), "--preset", "tiny"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no manifest/clips.parquet" in proc.stderr and str(tmp_path) in proc.stderr
    assert not (tmp_path / "out").exists()
