"""The Prefect flow ``preprocess`` end to end on the real sample videos with the real stages (real
Prefect harness, real local Ray): good and bad inputs in one batch, artifacts, idempotent rerun."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from anycharv.assets import asset_path
from anycharv.config import load_config
from anycharv.preprocessing.manifest import timing_columns
from anycharv.preprocessing.runtime import PreprocessJob

SMALL = [
    "decode.short_side=256", "split.clip_len=8", "split.min_len=8", "split.stride=24",
    "split.max_clips_per_video=2", "detect.imgsz=256", "mask.size=256", "pose.imgsz=256",
    "preview.num_frames=2", "preview.height=96", "runtime.progress=false",
]
REQUIRED = {"clip_id", "source", "status", "reason", "start_frame", "end_frame", "fps", "width", "height", "detail",
            "track_id", "annotation_dir", "config_hash", "source_digest"}


@pytest.fixture(scope="module")
def flow_run(prefect_harness, ray_local, tmp_path_factory):
    """One flow run over two good videos (one given through a glob) and three bad inputs."""
    from anycharv.flows.preprocess import preprocess

    tmp = tmp_path_factory.mktemp("flow")
    (tmp / "vids").mkdir()
    shutil.copy(asset_path("pose2sim_cam01.mp4"), tmp / "vids" / "cam01.mp4")
    (tmp / "empty.mp4").write_bytes(b"")
    (tmp / "notes.mp4").write_text("this is not a video\n" * 50)
    inputs = [str(asset_path("sports2d_demo.mp4")), str(tmp / "vids" / "*.mp4"), str(tmp / "missing.mp4"),
              str(tmp / "empty.mp4"), str(tmp / "notes.mp4")]
    job = load_config(PreprocessJob, None, SMALL)
    out = tmp / "out"
    result = preprocess(inputs=inputs, output=str(out), config=job)
    return {"inputs": inputs, "job": job, "out": out, "result": result, "tmp": tmp}


def test_flow_mixed_batch_outputs(flow_run):
    out, result = flow_run["out"], flow_run["result"]
    table = pq.read_table(out / "manifest" / "clips.parquet")
    assert REQUIRED <= set(table.column_names)
    rows = table.to_pylist()
    bad = {Path(r["source"]).name: r["reason"] for r in rows if r["kind"] == "input"}
    assert bad == {"missing.mp4": "not_found", "empty.mp4": "empty_file", "notes.mp4": "not_video"}
    clips = [r for r in rows if r["kind"] == "clip"]
    # Both good inputs completed: two clips each, every one decided (ok, or rejected with a reason).
    assert sorted(Path(r["source"]).name for r in clips) == ["cam01.mp4", "cam01.mp4", "sports2d_demo.mp4",
                                                             "sports2d_demo.mp4"]
    assert all((r["status"] == "ok") == (r["reason"] == "") for r in clips)
    ok = [r for r in clips if r["status"] == "ok"]
    assert ok, "the sample videos show one person each: some clip must pass"
    for row in ok:
        clip_dir = out / row["annotation_dir"]
        for key in ("ann_boxes", "ann_masks", "ann_keypoints", "ann_preview"):
            assert (out / row[key]).is_file() and (out / row[key]).parent == clip_dir
        assert row["width"] % 64 == 0 and min(row["width"], row["height"]) == 256 and row["track_id"] >= 0
        # The device each model ran on is in the row (it can change results; it is in no key).
        assert row["stat_detect_track_device"] == row["stat_fine_mask_device"] == row["stat_pose_device"] == "cpu"
    # The flow's small return value agrees with the manifest.
    counts = result["manifest_counts"]
    assert counts == {"rows": len(rows), "clips_ok": len(ok), "clips_rejected": len(clips) - len(ok),
                      "inputs_rejected": 3}
    assert result["inputs"] == 5 and result["inputs_rejected"] == 3
    assert json.loads((out / "manifest" / "run.json").read_text())["clips_processed"] == 4
    assert (out / "manifest" / "config.yaml").is_file()
    # pandas reads it as is.
    import pandas as pd

    assert len(pd.read_parquet(out / "manifest" / "clips.parquet")) == len(rows)


def test_flow_artifacts(flow_run):
    from prefect.artifacts import Artifact

    summary = Artifact.get("preprocess-summary")
    assert summary is not None and "# Preprocessing run" in summary.data
    assert summary.data.count("data:image/png;base64,") == flow_run["result"]["manifest_counts"]["clips_ok"]
    stages = json.loads(Artifact.get("preprocess-stages").data)
    names = [row["stage"] for row in stages]
    assert names == ["detect_track", "filter_people", "fine_mask", "pose", "filter", "preview", "end to end"]
    assert stages[0]["clips in"] == 4 and stages[-1]["frames"] == 32
    reasons = json.loads(Artifact.get("preprocess-reject-reasons").data)
    assert {(r["kind"], r["reason"]) for r in reasons} >= {("input", "not_found"), ("input", "empty_file"),
                                                           ("input", "not_video")}
    md = (flow_run["out"] / "manifest" / "summary.md").read_text()
    for line in md.splitlines():
        if line.startswith("!["):
            assert (flow_run["out"] / "manifest" / line.split("](")[1].rstrip(")")).is_file()


def test_flow_rerun_is_idempotent(flow_run):
    from anycharv.flows.preprocess import preprocess

    out = flow_run["out"]
    before = pq.read_table(out / "manifest" / "clips.parquet")
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "clips").rglob("*") if p.is_file()}
    result = preprocess(inputs=flow_run["inputs"], output=str(out), config=flow_run["job"])
    run = json.loads((out / "manifest" / "run.json").read_text())
    assert run["clips_processed"] == 0 and run["clips_skipped"] == 4 and run["inputs_cached"] == 4
    assert run["ray_started"] is False  # everything was found done: no cluster was started or joined
    # The reasons reported are the manifest's, not this run's (which rejected nothing).
    manifest_reasons = {}
    for row in before.to_pylist():
        if row["status"] == "rejected":
            manifest_reasons[row["reason"]] = manifest_reasons.get(row["reason"], 0) + 1
    assert result["manifest_reasons"] == manifest_reasons
    assert set(manifest_reasons) - set(result["reasons"]), "the clips' reasons come only from the manifest"
    assert all(s["batches"] == 0 and s["setup_s"] == 0 for s in run["stages"])  # no model loaded, no stage call
    assert {p: p.stat().st_mtime_ns for p in (out / "clips").rglob("*") if p.is_file()} == mtimes
    after = pq.read_table(out / "manifest" / "clips.parquet")
    assert after.drop_columns(timing_columns(after.column_names)).equals(
        before.drop_columns(timing_columns(before.column_names)))
    assert result["manifest_counts"] == flow_run["result"]["manifest_counts"]


def _stage_runs(out: Path) -> dict[str, tuple[int, int]]:
    """(clips computed, clips served from the stage cache) per stage in the last run."""
    run = json.loads((out / "manifest" / "run.json").read_text())
    return {s["name"]: (s["tasks_in"] - s["counters"].get("cached", 0), s["counters"].get("cached", 0))
            for s in run["stages"]}


def test_flow_settings_changes_rerun_only_the_stages_they_affect(flow_run):
    """Real stages: a filter change reruns only the filters; a mask change reruns mask, final filter
    and preview (detection and pose read only the boxes: they come from the cache); a preview change
    keeps the clip ids and redraws the previews; execution settings change nothing."""
    from anycharv.flows.preprocess import preprocess

    out, inputs = flow_run["out"], flow_run["inputs"]
    before = {r["clip_id"]: r for r in pq.read_table(out / "manifest" / "clips.parquet").to_pylist()
              if r["kind"] == "clip"}
    late_reasons = {"", "low_pose_confidence", "mask_empty", "mask_outside_box"}  # decided after the mask stage
    reached_mask = sum(r["reason"] in late_reasons for r in before.values())
    assert reached_mask > 0

    def rerun(*overrides):
        preprocess(inputs=inputs, output=str(out), config=load_config(PreprocessJob, None, SMALL + list(overrides)))
        rows = pq.read_table(out / "manifest" / "clips.parquet").to_pylist()
        return {r["clip_id"]: r for r in rows if r["kind"] == "clip"}, _stage_runs(out)

    rows, runs = rerun("filter.min_kp_conf=0.31")
    assert set(rows).isdisjoint(before)  # another config: other clip ids
    assert runs["detect_track"] == (0, 4)
    assert runs["fine_mask"] == (0, reached_mask) and runs["pose"] == (0, reached_mask)
    assert runs["filter_people"][1] == 0 and runs["filter_people"][0] >= reached_mask
    assert runs["filter"] == (reached_mask, 0)
    assert sorted(r["stat_mean_box_area"] for r in rows.values()) == sorted(
        r["stat_mean_box_area"] for r in before.values())

    rows, runs = rerun("filter.min_kp_conf=0.31", "mask.threshold=0.6")
    assert runs["detect_track"] == (0, 4) and runs["pose"] == (0, reached_mask)
    assert runs["fine_mask"] == (reached_mask, 0) and runs["filter"] == (reached_mask, 0)

    ids = set(rows)
    rows, runs = rerun("filter.min_kp_conf=0.31", "mask.threshold=0.6", "preview.height=80")
    assert set(rows) == ids  # the preview is not part of any clip id
    assert all(n == 0 for name, (n, _) in runs.items() if name != "preview")
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert runs["preview"] == (len(ok), 0)
    from PIL import Image

    assert all(Image.open(out / r["ann_preview"]).height == 80 for r in ok)

    rows, runs = rerun("filter.min_kp_conf=0.31", "mask.threshold=0.6", "preview.height=80", "detect.gpus=0.5",
                       "runtime.device=cpu", "pose.batch=2")
    assert set(rows) == ids and json.loads((out / "manifest" / "run.json").read_text())["ray_started"] is False
