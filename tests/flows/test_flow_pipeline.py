"""The flow ``pipeline`` (real Prefect harness, real sample videos, tiny networks): raw videos to batch
inference in one run, every step's output where the summary says, the trained model scored against
its untrained start, and a rerun that finds every step done."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from anycharv.assets import asset_path


def _config(steps: list[str]):
    from anycharv.config import load_config
    from anycharv.flows.pipeline import PipelineJob

    return load_config(PipelineJob, None, [*steps, "batch.batch.steps=2", "batch.batch.size=64",
                                           "batch.batch.max_frames=8", "batch.runtime.executor=local",
                                           "batch.runtime.progress=false", "jobs.max_jobs=1"])


@pytest.mark.timeout(900)
def test_videos_in_replaced_characters_out(prefect_harness, tiny_steps, tmp_path):
    from anycharv.flows.pipeline import pipeline

    videos = [str(asset_path("pose2sim_cam01.mp4")), str(asset_path("pose2sim_cam02.mp4"))]
    reference = str(asset_path("astronaut.png"))
    out = tmp_path / "out"
    summary = pipeline(videos, [reference], str(out), preset="tiny", config=_config(tiny_steps))
    assert json.loads((out / "pipeline-summary.json").read_text()) == summary
    assert summary["clips_ok"] == 2 and summary["cache_splits"] == {"train": 1, "val": 1}
    assert (Path(summary["model"]) / "model_index.json").is_file()
    assert summary["evaluation"]["metric"] == "psnr_mask" and summary["evaluation"]["score"] is not None
    assert summary["evaluation_start"]["score"] is not None  # the untrained start, scored on the same clips
    table = (out / "batch" / "jobs.csv").read_text().splitlines()
    assert table[0] == "job_id,reference,video" and len(table) == 2  # jobs.max_jobs=1
    results = pq.read_table(summary["batch_results"]).to_pylist()
    assert [r["status"] for r in results] == ["ok"] and results[0]["frames"] == 8
    assert [Path(p).is_file() for p in summary["batch_outputs"] + summary["batch_previews"]] == [True, True]

    again = pipeline(videos, [reference], str(out), preset="tiny", config=_config(tiny_steps))
    assert again["evaluation"] == summary["evaluation"]  # same model, same clips, same numbers
    assert pq.read_table(again["batch_results"]).to_pylist()[0]["reused"]


def test_a_pipeline_needs_a_start_and_existing_references(prefect_harness, tmp_path):
    from anycharv.errors import InputError
    from anycharv.flows.pipeline import pipeline

    videos = [str(asset_path("pose2sim_cam01.mp4"))]
    with pytest.raises(InputError, match="give init, unet2d or preset"):
        pipeline(videos, [str(asset_path("astronaut.png"))], str(tmp_path / "a"))
    with pytest.raises(InputError, match="not found"):
        pipeline(videos, [str(tmp_path / "missing.png")], str(tmp_path / "b"), preset="tiny")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before any work
