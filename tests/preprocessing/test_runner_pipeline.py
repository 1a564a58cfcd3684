"""The preprocessing driver on the real sample videos with small real stages (runner_toys.py), on
every executor backend: outputs, manifest types, idempotent reruns, the stage cache, streaming, and
per-item failures."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anycharv.assets import asset_path
from anycharv.executor import BACKENDS, PipelineError
from anycharv.preprocessing.finalize import DONE_NAME, OutputLayout
from anycharv.preprocessing.manifest import FIXED_COLUMNS, timing_columns, write_manifest
from anycharv.preprocessing.runner import run_pipeline
from anycharv.preprocessing.runtime import RuntimeConfig

RAY_BACKENDS = [b for b in BACKENDS if b != "local"]


def _load_toys():
    name = "anycharv_test_runner_toys"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("runner_toys.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(module)  # Ray workers cannot import tests/
    return sys.modules[name]


toys = _load_toys()


def write_tiny_video(path: Path, frames: int) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(frames):
            img = np.full((64, 64, 3), 20 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def videos():
    return [str(asset_path("sports2d_demo.mp4")), str(asset_path("pose2sim_cam01.mp4"))]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=RAY_BACKENDS)
def ray_backend(request):
    """The Ray backends only: with ``local`` a dying worker is the test process itself."""
    return request.param


@pytest.fixture
def run(backend):
    """``run_toys`` on the backend under test."""
    return lambda *args, **kwargs: run_toys(*args, executor=backend, **kwargs)


@pytest.fixture
def run_on_ray(ray_backend):
    return lambda *args, **kwargs: run_toys(*args, executor=ray_backend, **kwargs)


def run_toys(sources, out, cfg, stages=None, executor="ray-actors", **runtime):
    stages = toys.toy_stages(cfg) if stages is None else stages
    summary = run_pipeline(sources, out, cfg, RuntimeConfig(progress=False, executor=executor, **runtime),
                           stages=stages, plan_fn=toys.toy_plan, digest_fn=toys.toy_digest)
    manifest = write_manifest(OutputLayout.create(out), summary.config_hash)
    return summary, pq.read_table(manifest)


def stable(table: pa.Table) -> list[dict]:
    return table.drop_columns(timing_columns(table.column_names)).to_pylist()


def test_runner_outputs_manifest_and_bad_inputs(ray_local, run, tmp_path, videos):
    calls = tmp_path / "calls"
    calls.mkdir()
    cfg = toys.ToyConfig(calls_dir=str(calls))
    missing = str(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    short = write_tiny_video(tmp_path / "short.mp4", frames=3)
    out = tmp_path / "out"
    summary, table = run([videos[0], missing, str(text), videos[1], str(short)], out, cfg)

    rows = table.to_pylist()
    clips = [r for r in rows if r["kind"] == "clip"]
    inputs = {Path(r["source"]).name: r for r in rows if r["kind"] == "input"}
    assert len(clips) == 6 and all(r["status"] == "ok" for r in clips)
    assert {n: r["reason"] for n, r in inputs.items()} == {"missing.mp4": "not_found", "notes.mp4": "unreadable",
                                                          "short.mp4": "too_short"}
    assert all(r["status"] == "rejected" and r["detail"] for r in inputs.values())
    assert summary.inputs == 5 and summary.inputs_rejected == 3 and summary.clips_ok == 6

    # Plain Arrow types only, fixed columns first and typed as documented.
    for name, dtype in FIXED_COLUMNS:
        assert table.schema.field(name).type == dtype, name
    for f in table.schema:
        assert f.type in (pa.string(), pa.int64(), pa.float64(), pa.bool_()), f
    assert table.schema.metadata is None or b"ARROW:extension" not in b"".join(table.schema.metadata.values())
    assert table.schema.field("stat_motion_mean").type == pa.float64()  # nested stats are flattened
    assert {"time_framestats_s", "time_lumafilter_s"} <= set(table.column_names)

    # Every ok clip is complete under clips/<clip_id>/ and its annotations are where the row says.
    for row in clips:
        clip_dir = out / row["annotation_dir"]
        assert clip_dir == out / "clips" / row["clip_id"] and (clip_dir / DONE_NAME).is_file()
        stats = np.load(out / row["ann_frame_stats"])
        assert stats.shape == (row["num_frames"], 2)
        assert row["stat_mean_luma"] == pytest.approx(float(stats[:, 0].mean()), abs=1e-5)
        assert row["fps"] in (30.0, 60.0) and row["end_frame"] - row["start_frame"] == 6
    assert not any((out / ".work").iterdir())  # nothing unfinished left behind
    ids = sorted(r["clip_id"] for r in clips)

    # pandas and DuckDB read the file as it is.
    import duckdb
    import pandas as pd

    df = pd.read_parquet(out / "manifest" / "clips.parquet")
    assert sorted(df.loc[df.kind == "clip", "clip_id"]) == ids
    con = duckdb.connect()
    counts = dict(con.execute(
        f"select status, count(*) from read_parquet('{out}/manifest/clips.parquet') group by status").fetchall())
    assert counts == {"ok": 6, "rejected": 3}


def test_runner_rerun_does_no_stage_work(ray_local, run, tmp_path, videos):
    calls = tmp_path / "calls"
    calls.mkdir()
    cfg = toys.ToyConfig(calls_dir=str(calls))
    out = tmp_path / "out"
    first, table1 = run(videos, out, cfg)
    before = toys.read_calls(calls)
    assert sum(c["kind"] == "process" for c in before) >= 2 and first.clips_processed == 6
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "clips").rglob("*") if p.is_file()}

    second, table2 = run(videos, out, cfg)
    assert toys.read_calls(calls) == before  # no setup, no process call
    assert second.clips_skipped == 6 and second.clips_processed == 0 and second.inputs_cached == 2
    assert not second.ray_started and first.ray_started == (first.executor != "local")  # all found done on disk
    assert {p: p.stat().st_mtime_ns for p in (out / "clips").rglob("*") if p.is_file()} == mtimes
    assert table2.equals(table1)


def test_runner_streams_clips_between_stages(ray_local, run_on_ray, tmp_path, videos):
    calls = tmp_path / "calls"
    calls.mkdir()
    cfg = toys.ToyConfig(calls_dir=str(calls), max_clips=4)
    run_on_ray(videos, tmp_path / "out", cfg)
    process = [c for c in toys.read_calls(calls) if c["kind"] == "process"]
    first_filter = min(c["t"] for c in process if c["stage"] == "lumafilter")
    last_stats = max(c["t"] for c in process if c["stage"] == "framestats")
    # The filter stage started on early clips while frame statistics were still being computed.
    assert first_filter < last_stats
    # Batches follow each stage's batch size (2 for framestats; 8 clips -> 4 calls).
    assert sorted(len(c["clips"]) for c in process if c["stage"] == "framestats") == [2, 2, 2, 2]


def test_runner_records_item_failures_and_retries_them(ray_local, run, tmp_path, videos):
    cfg = toys.ToyConfig(min_luma=0.0)
    out = tmp_path / "out"
    stages = [toys.FrameStatsStage(cfg), toys.FailingBatchStage(bad_starts=(6,))]
    summary, table = run(videos, out, cfg, stages=stages)
    by_start = {}
    for row in table.to_pylist():
        by_start.setdefault(row["start_frame"], []).append(row)
    assert all(r["status"] == "rejected" and r["reason"] == "stage_error" and "bad clip" in r["detail"]
               for r in by_start[0])
    assert all(r["reason"] == "stage_error" and "boom in a whole batch" in r["detail"] for r in by_start[6])
    assert all(r["status"] == "ok" for r in by_start[12])
    assert summary.reasons == {"stage_error": 4} and summary.clips_ok == 2
    assert not any((out / "clips" / r["clip_id"]).exists() for r in by_start[0] + by_start[6])

    # Machinery failures are retried by the next run (here with a fixed stage); finished clips are not,
    # and the stage that had succeeded on the failed clips is served from the stage cache.
    calls = tmp_path / "calls"
    calls.mkdir()
    cfg2 = toys.ToyConfig(min_luma=0.0, calls_dir=str(calls))
    fixed = [toys.FrameStatsStage(cfg2), toys.FailingBatchStage(bad_starts=(), bad_clip_start=None)]
    summary2, table2 = run(videos, out, cfg, stages=fixed)
    assert toys.read_calls(calls) == []  # framestats: no process call, and its setup() never ran
    framestats, flaky = summary2.stages
    assert framestats.counters == {"cached": 4} and flaky.tasks_in == 4
    assert summary2.clips_skipped == 2 and all(r["status"] == "ok" for r in table2.to_pylist())


def test_runner_replaces_dead_workers(ray_local, run_on_ray, tmp_path, videos):
    cfg = toys.ToyConfig()
    summary, table = run_on_ray(videos, tmp_path / "out", cfg, stages=[toys.DyingStage(die_start=6)])
    rows = table.to_pylist()
    dead = [r for r in rows if r["start_frame"] == 6]
    assert len(dead) == 2 and all(r["reason"] == "worker_error" for r in dead)
    assert all(r["status"] == "ok" for r in rows if r["start_frame"] != 6)


def test_runner_setup_failure_stops_without_records(ray_local, run, tmp_path, videos):
    out = tmp_path / "out"
    with pytest.raises(PipelineError, match="broken: setup failed: .*weights /nowhere/model.onnx are missing"):
        run(videos[:1], out, toys.ToyConfig(), stages=[toys.BrokenSetupStage()])
    assert not list((out / ".state" / "clips").iterdir()) and not list((out / "clips").iterdir())


def test_runner_missing_input_row_is_replaced_when_the_file_appears(ray_local, run, tmp_path, videos):
    cfg = toys.ToyConfig(max_clips=1)
    late = tmp_path / "late.mp4"
    out = tmp_path / "out"
    _, table = run([str(late)], out, cfg)
    assert [(r["kind"], r["reason"]) for r in table.to_pylist()] == [("input", "not_found")]
    shutil.copy(videos[1], late)
    _, table = run([str(late)], out, cfg)
    assert [(r["kind"], r["status"]) for r in table.to_pylist()] == [("clip", "ok")]


def test_runner_settings_change_reruns_only_the_stages_it_affects(ray_local, run, tmp_path, videos, capsys):
    calls = tmp_path / "calls"
    calls.mkdir()
    out = tmp_path / "out"

    def processed(stage):
        calls_of = [c for c in toys.read_calls(calls) if c["kind"] == "process" and c["stage"] == stage]
        return [cid for c in calls_of for cid in c["clips"]]

    first, table1 = run(videos, out, toys.ToyConfig(calls_dir=str(calls)))
    assert len(processed("framestats")) == 6 and len(processed("lumafilter")) == 6
    # A filter-only change: new clip ids, frame statistics come from the stage cache, only the filter runs.
    second, table2 = run(videos, out, toys.ToyConfig(calls_dir=str(calls), min_luma=0.45))
    assert len(processed("framestats")) == 6 and len(processed("lumafilter")) == 12
    assert second.stages[0].counters == {"cached": 6} and second.stages[1].counters == {}
    setups = [c["stage"] for c in toys.read_calls(calls) if c["kind"] == "setup"]
    assert setups.count("framestats") == 1  # the first run's: the second never loaded its models
    rows1, rows2 = stable(table1), stable(table2)
    assert {r["clip_id"] for r in rows1}.isdisjoint(r["clip_id"] for r in rows2)
    assert [r["stat_mean_luma"] for r in rows1] == [r["stat_mean_luma"] for r in rows2]
    assert {r["reason"] for r in rows2} == {"", "too_dark"}  # the new threshold rejects some
    for row in rows2:  # the cached files are the clip's own, complete files
        if row["status"] == "ok":
            assert np.load(out / row["ann_frame_stats"]).shape == (6, 2)
    # A change of the first stage's settings reruns it and everything that reads its output.
    third, _ = run(videos, out, toys.ToyConfig(calls_dir=str(calls), min_luma=0.45, thumb=16))
    assert len(processed("framestats")) == 12 and len(processed("lumafilter")) == 18
    assert third.stages[0].counters == {}

    # The first two configs' clips are no longer referenced by the manifest: listed, removed on request.
    from anycharv.preprocessing.cleanup import find_unreferenced, remove_unreferenced

    layout = OutputLayout.create(out)
    found = find_unreferenced(layout)
    old_ok = {r["clip_id"] for r in rows1 + rows2 if r["status"] == "ok"}
    assert {d.name for d in found.clip_dirs} == old_ok
    assert {p.stem for p in found.clip_states} == {r["clip_id"] for r in rows1 + rows2}
    assert {stage for stage, _ in found.cache_entries} == {"framestats", "lumafilter"}
    kept_before = stable(pq.read_table(layout.manifest_path))
    from anycharv.cli import main

    assert main(["preprocess", "--gc", "-o", str(out)]) == 0  # lists, removes nothing
    listed = capsys.readouterr().out
    assert all(f"clip folder {d}" in listed for d in found.clip_dirs) and "--gc --yes removes them" in listed
    assert all(d.is_dir() for d in found.clip_dirs)
    assert main(["preprocess", "--gc", "--yes", "-o", str(out)]) == 0
    assert f"removed {len(found.lines())} item(s)" in capsys.readouterr().out
    assert find_unreferenced(layout).empty and remove_unreferenced(layout, find_unreferenced(layout)) == 0
    assert {d.name for d in (out / "clips").iterdir()} == {r["clip_id"] for r in kept_before if r["status"] == "ok"}
    fourth, table4 = run(videos, out, toys.ToyConfig(calls_dir=str(calls), min_luma=0.45, thumb=16))
    assert not fourth.ray_started and stable(table4) == kept_before


def test_runner_byte_identical_inputs_are_planned_once_under_one_name(ray_local, run, tmp_path, videos):
    shutil.copy(videos[1], tmp_path / "a.mp4")
    shutil.copy(videos[1], tmp_path / "b.mp4")
    out = tmp_path / "out"
    cfg = toys.ToyConfig(max_clips=2)
    summary, table = run([str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")], out, cfg)
    assert summary.inputs_duplicate == 1 and len(summary.duplicates) == 1
    (skipped, kept), = summary.duplicates.items()
    assert {Path(skipped).name, Path(kept).name} == {"a.mp4", "b.mp4"}
    rows = table.to_pylist()
    assert len(rows) == 2 and {r["source"] for r in rows} == {kept}
    records = [json.loads(p.read_text()) for p in (out / ".state" / "inputs").glob("*.json")]
    assert [r["source"] for r in records] == [kept]  # the input record names the same file as the rows
    again, table2 = run([str(tmp_path / "b.mp4"), str(tmp_path / "a.mp4")], out, cfg)
    assert again.duplicates == summary.duplicates and stable(table2) == stable(table)
