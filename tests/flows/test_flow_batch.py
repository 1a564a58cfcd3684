"""The Prefect flow ``batch_infer`` (real Prefect harness) with its artifacts read back through the
client, and ``anycharv batch``: counts printed, finished jobs skipped by a rerun, whole-table
errors refused before Prefect starts."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from anycharv.assets import asset_path
from anycharv.errors import AnyCharVError


def batch_cli(argv: list[str]) -> int:
    """``anycharv batch ARGS`` through the command's own ``register`` (as ``anycharv.cli.main`` runs it)."""
    from anycharv.commands import batch

    parser = argparse.ArgumentParser(prog="anycharv")
    batch.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["batch", *argv])
    try:
        return args.func(args)
    except AnyCharVError as exc:
        print(f"anycharv batch: error: {exc}", file=sys.stderr)
        return 1


@pytest.fixture()
def table(tmp_path):
    path = tmp_path / "jobs.csv"
    path.write_text("job_id,reference,video,max_frames,steps,output\n"
                    f"walk,{asset_path('grace_hopper.jpg')},{asset_path('sports2d_demo.mp4')},3,2,walk.mp4\n"
                    f"gone,{tmp_path / 'missing.png'},{asset_path('sports2d_demo.mp4')},3,2,\n")
    return path


OVERRIDES = ["runtime.executor=local", "runtime.progress=false", "batch.size=64", "mask.size=512"]


def test_flow_runs_the_table_and_publishes_results_and_previews(prefect_harness, table, tmp_path, capsys):
    from prefect.artifacts import Artifact

    from anycharv.config import load_config
    from anycharv.flows.batch_infer import batch_infer
    from anycharv.inference.batch_config import BatchJob

    out = tmp_path / "out"
    job = load_config(BatchJob, None, OVERRIDES)
    result = batch_infer(jobs=str(table), output=str(out), preset="tiny", config=job)
    assert (result["ok"], result["rejected"], result["ran"]) == (1, 1, 1)
    assert result["outputs"] == [str(out / "videos" / "walk.mp4")]

    rows = json.loads(Artifact.get("batch-results").data)
    assert [(r["job_id"], r["status"], r["reason"]) for r in rows] == [("walk", "ok", None),
                                                                        ("gone", "rejected", "not_found")]
    assert rows[0]["output"] == "videos/walk.mp4" and rows[0]["frames"] == 3 and "missing.png" in rows[1]["detail"]
    summary = Artifact.get("batch-summary").data
    assert "# Batch inference" in summary and summary.count("data:image/png;base64,") == 1
    assert (out / "videos" / "walk.mp4").as_uri() in summary
    assert "| `gone` | rejected | not_found |" in summary and (out / "results.parquet").as_uri() in summary

    # The command on the same folder: nothing to do, the counts and where the results are.
    capsys.readouterr()
    assert batch_cli(["--jobs", str(table), "--output", str(out), "--preset", "tiny", *OVERRIDES]) == 0
    printed = capsys.readouterr()
    assert f"results: {out / 'results.parquet'}" in printed.out
    assert "2 jobs: 1 ok, 1 rejected, 0 failed, 1 already done; this run: 0 jobs" in printed.out
    assert "reasons: not_found=1" in printed.out and "RANDOM tiny weights" in printed.err


@pytest.mark.parametrize("case", ["no_video_column", "table_missing", "bad_weights", "no_model", "output_is_file",
                                  "bad_override"])
def test_cli_refuses_whole_run_errors_before_prefect_starts(case, tmp_path, capsys, monkeypatch):
    import anycharv.commands.preprocess as preprocess

    monkeypatch.setattr(preprocess, "_prefect_defaults", lambda: pytest.fail("Prefect must not start"))
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"job_id,reference,video\na,{asset_path('grace_hopper.jpg')},{asset_path('sports2d_demo.mp4')}\n")
    out = tmp_path / "out"
    argv = ["--jobs", str(jobs), "--output", str(out), "--preset", "tiny"]
    if case == "no_video_column":
        jobs.write_text(f"job_id,reference\na,{asset_path('grace_hopper.jpg')}\n")
        expect = "missing required column(s) video"
    elif case == "table_missing":
        argv[1] = str(tmp_path / "none.parquet")
        expect = "none.parquet: file not found"
    elif case == "bad_weights":
        argv = argv[:4] + ["--weights", str(tmp_path / "no-weights")]
        expect = "no-weights: no such folder"
    elif case == "no_model":
        argv = argv[:4]
        expect = "give --weights DIR_OR_HUB_ID, or --preset tiny"
    elif case == "output_is_file":
        out.write_text("x")
        expect = "exists and is not a folder"
    else:
        argv.append("batch.stepz=3")
        expect = "unknown key 'stepz'"
    assert batch_cli(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("anycharv batch: error: ") and expect in err, err
    assert case == "output_is_file" or not out.exists()


def test_cli_help_names_the_inputs(capsys):
    with pytest.raises(SystemExit) as info:
        batch_cli(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "--jobs FILE" in out and "--output DIR" in out and "results.parquet" in out and "--ray-address" in out
