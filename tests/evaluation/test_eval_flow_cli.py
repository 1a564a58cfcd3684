"""The Prefect flow ``evaluate`` (real Prefect harness) and ``anycharv evaluate``: the artifacts read back
through the Prefect client, the printed aggregate, and bad inputs refused with a message naming them
before Prefect or Ray start."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from anycharv.cli import main

REPO = Path(__file__).resolve().parents[2]
LOCAL = ["runtime.executor=local", "runtime.progress=false", "eval.steps=2", "eval.num_frames=4"]


@pytest.fixture
def cache(eval_cache) -> Path:
    return eval_cache


@pytest.fixture
def model(eval_model) -> Path:
    return eval_model


def _artifacts(flow_run_id) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))

    return {a.key: a for a in asyncio.run(read())}


def test_flow_scores_and_publishes_the_metrics_and_a_summary(prefect_harness, cache, model, tmp_path):
    from anycharv.config import load_config
    from anycharv.evaluation.config import EvalJob
    from anycharv.flows.evaluate import evaluate

    job = load_config(EvalJob, None, LOCAL)
    state = evaluate(str(model), str(cache), str(tmp_path / "out"), job, return_state=True)
    result = state.result()
    assert result["clips"] == 2 and result["split_used"] == "val" and result["score"] is not None
    artifacts = _artifacts(state.state_details.flow_run_id)
    assert {"evaluation-metrics", "evaluation-summary"} <= set(artifacts)
    rows = {r["metric"]: r for r in json.loads(artifacts["evaluation-metrics"].data)}
    assert list(rows) == result["metrics_available"] and len(rows) == 9
    assert rows["psnr_mask"]["value"] == result["score"] and rows["psnr_mask"]["clips"] == 2
    assert rows["l1"]["higher_is_better"] is False and rows["ssim"]["higher_is_better"] is True
    summary = artifacts["evaluation-summary"].data
    assert "# Evaluation" in summary and f"**psnr_mask: {result['score']:.4f}**" in summary
    assert "Skipped: lpips (no weights given (eval.lpips_weights, eval.lpips_backbone))" in summary
    for path in result["previews"]:
        assert f"| {Path(path).stem} |" in summary  # the per-clip table
    assert summary.count("data:image/png;base64,") == len(result["previews"]) == 2


def test_flow_refuses_a_bad_input_before_scoring(prefect_harness, cache, tmp_path):
    from anycharv.errors import InputError
    from anycharv.flows.evaluate import evaluate

    with pytest.raises(InputError, match="no such folder"):
        evaluate(str(tmp_path / "missing"), str(cache), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_cli_prints_the_aggregate(prefect_harness, cache, model, tmp_path):
    # stdout only (not capsys): Prefect's log handler keeps the stderr it found, after the test too
    out, printed = tmp_path / "out", io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["evaluate", "--model", str(model), "--data", str(cache), "--output", str(out), *LOCAL,
                     "eval.metric=ssim_mask"]) == 0
    printed = printed.getvalue()
    summary = json.loads((out / "summary.json").read_text())
    assert f"scored 2 of 2 val clips of {cache}" in printed and "rejected: none" in printed
    value = summary["aggregate"]["ssim_mask"]
    assert re.search(rf"ssim_mask +{value:.4f}  \(n=2\)  <- primary", printed)
    assert re.search(r"fid +skipped  no weights given \(eval.fid_weights\)", printed)
    assert f"per clip: {out / 'clips.parquet'}" in printed and printed.count("preview: ") == 2


def _fails(capsys, *argv: str) -> str:
    assert main(["evaluate", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("anycharv evaluate: error: ")
    return err


def test_cli_names_the_bad_input(capsys, cache, model, tmp_path):
    out = str(tmp_path / "out")
    err = _fails(capsys, "--model", str(tmp_path / "nope"), "--data", str(cache), "--output", out)
    assert f"--model {tmp_path / 'nope'}: no such folder" in err
    err = _fails(capsys, "--model", str(model), "--data", str(model), "--output", out)
    assert f"--data {model}" in err and "not a latent cache" in err
    err = _fails(capsys, "--model", str(model), "--data", str(tmp_path / "gone"), "--output", out)
    assert f"--data {tmp_path / 'gone'}: no such folder" in err
    err = _fails(capsys, "--model", str(model), "--data", str(cache), "--output", out, "eval.stepz=3")
    assert "unknown key 'stepz' under eval" in err
    err = _fails(capsys, "--model", str(model), "--data", str(cache), "--output", out, "eval.metric=psnr_in")
    assert "eval.metric: unknown metric 'psnr_in'" in err
    err = _fails(capsys, "--model", str(model), "--data", str(cache), "--output", out,
                 f"eval.fvd_weights={tmp_path / 'i3d.pt'}")
    assert f"eval.fvd_weights {tmp_path / 'i3d.pt'}: no such file" in err
    (tmp_path / "file").write_text("x")
    err = _fails(capsys, "--model", str(model), "--data", str(cache), "--output", str(tmp_path / "file"))
    assert "--output" in err and "not a folder" in err
    assert not (tmp_path / "out").exists()


def test_cli_help_and_the_default_config():
    from anycharv.config import load_config
    from anycharv.evaluation.config import EvalJob

    assert load_config(EvalJob, REPO / "configs" / "evaluate.yaml") == EvalJob()
    proc = subprocess.run([sys.executable, "-m", "anycharv.cli", "evaluate", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--model DIR" in proc.stdout and "--data CACHE_DIR" in proc.stdout
