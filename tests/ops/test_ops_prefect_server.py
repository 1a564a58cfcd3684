"""Against a real ``prefect server start`` on 127.0.0.1 (started and stopped here): prefect.yaml
registers every deployment through ``prefect deploy``, ``anycharv serve`` takes them over and runs a
flow run triggered through the REST API, and that run's artifacts are read back through the API."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
from ops_servers import BIN, api_client, prefect_server, stop_group, wait_for

from anycharv.assets import asset_path

REPO = Path(__file__).resolve().parents[2]
FLOWS = {"preprocess", "cache_latents", "train", "self_boost", "two_stage", "evaluate", "retrain", "batch_infer",
         "pipeline"}
SMALL_PREPROCESS = {"decode": {"short_side": 256}, "split": {"clip_len": 8, "min_len": 8, "stride": 24,
                                                               "max_clips_per_video": 1},
                    "detect": {"imgsz": 256}, "mask": {"size": 256}, "pose": {"imgsz": 256},
                    "preview": {"num_frames": 2, "height": 96}, "runtime": {"executor": "local", "progress": False}}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

pytestmark = pytest.mark.timeout(600)


def _deployments(api: httpx.Client) -> dict[str, dict]:
    flows = {f["id"]: f["name"] for f in api.post("/flows/filter", json={}).json()}
    deployments = api.post("/deployments/filter", json={}).json()
    return {d["name"]: {**d, "flow_name": flows[d["flow_id"]]} for d in deployments}


def _all_deployed(api: httpx.Client) -> dict[str, dict] | None:
    deployments = _deployments(api)
    return deployments if set(deployments) == FLOWS else None


def _cli(args: list[str], env: dict, cwd: Path | None = None) -> str:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{args}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result.stdout


def test_deployments_a_triggered_run_and_its_artifacts_on_a_real_server(tmp_path):
    with prefect_server(tmp_path / "prefect-home") as env, api_client(env) as api:
        # prefect.yaml, deployed the way its header says
        _cli([str(BIN / "prefect"), "work-pool", "create", "anycharv", "--type", "process"], env)
        _cli([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], env, cwd=REPO)
        deployed = _deployments(api)
        assert set(deployed) == FLOWS
        assert all(d["flow_name"] == name and d["work_pool_name"] == "anycharv" for name, d in deployed.items())
        assert [s["schedule"]["cron"] for s in deployed["retrain"]["schedules"]] == ["0 3 * * 0"]
        limits = {n for n, d in deployed.items() if (d.get("global_concurrency_limit") or {}).get("limit") == 1}
        assert limits == {"train", "two_stage", "retrain", "pipeline"}
        config_form = deployed["preprocess"]["parameter_openapi_schema"]
        assert config_form["definitions"]["DecodeConfig"]["properties"]["short_side"]["type"] == "integer"

        for deployment in deployed.values():  # serve registers its own, from scratch
            assert api.delete(f"/deployments/{deployment['id']}").status_code == 204

        # anycharv serve: the same deployments, served (no work pool), running what the API asks for
        log = tmp_path / "serve.log"
        serve_env = dict(env, PREFECT_RUNNER_POLL_FREQUENCY="2")
        with open(log, "w") as out:
            serve = subprocess.Popen([str(BIN / "anycharv"), "serve", "--retrain-cron", "off"], env=serve_env,
                                     stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, cwd=tmp_path)
        try:
            served = wait_for(lambda: _all_deployed(api), 120, "anycharv serve registering its deployments", serve,
                              log)
            assert all(d["work_pool_name"] is None for d in served.values())  # served here, not by a pool
            assert not served["retrain"]["schedules"]  # --retrain-cron off
            out_dir = tmp_path / "prep"
            run = api.post(f"/deployments/{served['preprocess']['id']}/create_flow_run", json={
                "parameters": {"inputs": [str(asset_path("sports2d_demo.mp4"))], "output": str(out_dir),
                               "config": SMALL_PREPROCESS}}).json()
            started = time.monotonic()
            state = wait_for(lambda: _terminal(api, run["id"]), 400, "the triggered preprocess run", serve, log)
            assert state == "COMPLETED", log.read_text()[-4000:]
            assert (out_dir / "manifest" / "clips.parquet").is_file()
            query = {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}
            artifacts = api.post("/artifacts/filter", json=query).json()
            by_key = {a["key"]: a for a in artifacts}
            assert {"preprocess-stages", "preprocess-reject-reasons", "preprocess-summary"} <= set(by_key)
            summary = by_key["preprocess-summary"]["data"]
            assert summary.startswith("# Preprocessing run") and f"`{out_dir}`" in summary
            assert "end to end" in str(by_key["preprocess-stages"]["data"])
            print(f"triggered run completed in {time.monotonic() - started:.1f} s")
        finally:
            stop_group(serve)


def _terminal(api: httpx.Client, run_id: str) -> str | None:
    state = api.get(f"/flow_runs/{run_id}").json()["state"]
    return state["type"] if state and state["type"] in TERMINAL else None


@pytest.fixture(autouse=True)
def _no_inherited_api(monkeypatch):
    """The servers here are the only Prefect the subprocesses may see."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
