"""Against a real Ray cluster started here (``ray start --head`` on 127.0.0.1): preprocessing, latent
caching and a short training run, each a CLI command given ``--ray-address``, run their workers on
that cluster. The three commands report to one running Prefect server (PREFECT_API_URL) instead
of each starting a temporary one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from ops_servers import BIN, actors_run, prefect_server, ray_head

from anycharv.assets import asset_path

SMALL = ["decode.short_side=256", "split.clip_len=8", "split.min_len=8", "split.stride=24",
         "split.max_clips_per_video=2", "detect.imgsz=256", "mask.size=256", "pose.imgsz=256",
         "preview.num_frames=2", "preview.height=96", "runtime.progress=false"]

pytestmark = pytest.mark.timeout(600)


def _anycharv(args: list[str], env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "anycharv"), *args], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"anycharv {args[0]}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "temporary Prefect API" not in result.stderr  # the running server was used
    return result


def test_preprocess_cache_and_training_run_on_a_cluster_given_by_address(tmp_path):
    videos = [str(asset_path("sports2d_demo.mp4")), str(asset_path("pose2sim_cam01.mp4"))]
    with prefect_server(tmp_path / "prefect-home") as env, ray_head(num_cpus=2) as head:
        env = dict(env, RAY_ADDRESS="")  # only the flag points at the cluster
        address = head["address"]
        prep, cache, run = tmp_path / "prep", tmp_path / "cache", tmp_path / "run"
        _anycharv(["preprocess", *sum((["--input", v] for v in videos), []), "--output", str(prep),
                   "--ray-address", address, "filter.people_rule=main_dominant", *SMALL], env)
        stage_workers = actors_run(head["temp"])["StageWorker"]
        assert stage_workers >= 1
        _anycharv(["cache", "--input", str(prep), "--output", str(cache), "--preset", "tiny", "--ray-address", address,
                   "cache.buckets=[[64,64]]", "cache.val_fraction=0.5", "runtime.progress=false"], env)
        summary = json.loads((cache / "summary.json").read_text())
        assert summary["samples"] >= 2
        assert actors_run(head["temp"])["StageWorker"] > stage_workers  # the encode stage's actors ran there
        _anycharv(["train", "--stage", "stage1_image", "--data", str(cache), "--output", str(run), "--preset", "tiny",
                   "--max-steps", "3", "--ray-address", address, "train.data.batch_size=1",
                   "runtime.validation.enabled=false", "runtime.checkpoint.every=3"], env)
        assert actors_run(head["temp"])["RayTrainWorker"] >= 1
        assert json.loads((run / "summary.json").read_text())["final_step"] == 3
        assert (Path(run) / "checkpoints").is_dir()
