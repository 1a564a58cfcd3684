"""``anycharv preprocess`` in a subprocess: an uninterrupted run (no Prefect server, its own local
Ray) against a run that is SIGKILLed at several moments and resumed, on every executor backend; the
final manifests must be equal (timing columns aside) and no half-written file may ever be visible
under a final name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from anycharv.assets import asset_path
from anycharv.atomic import TMP_PREFIX
from anycharv.executor import BACKENDS
from anycharv.preprocessing.finalize import DONE_NAME
from anycharv.preprocessing.manifest import timing_columns

SMALL = [
    "decode.short_side=256", "split.clip_len=8", "split.min_len=8", "split.stride=24",
    "split.max_clips_per_video=2", "detect.imgsz=256", "mask.size=256", "pose.imgsz=256",
    "preview.num_frames=2", "preview.height=96", "runtime.progress=false",
]
NUM_CLIPS = 4


def cli_args(out: Path, *extra: str) -> list[str]:
    videos = [str(asset_path("sports2d_demo.mp4")), str(asset_path("pose2sim_cam01.mp4"))]
    args = [sys.executable, "-m", "anycharv.cli", "preprocess", "--output", str(out)]
    for video in videos:
        args += ["--input", video]
    return args + list(extra) + SMALL


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # A new session: the kill takes the whole process group (CLI, its Prefect server, Ray processes it
    # started), like a machine losing power.
    return subprocess.Popen(args, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(proc: subprocess.Popen, condition, timeout: float = 240) -> bool:
    """SIGKILL the run as soon as ``condition()`` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if condition():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the run neither finished nor reached the kill point in time")


def count(folder: Path, pattern: str = "*.json") -> int:
    return len(list(folder.glob(pattern))) if folder.is_dir() else 0


def check_nothing_half_written(out: Path) -> None:
    """Everything under a final name is complete: clip folders hold their completion record, state
    records parse, an existing manifest reads."""
    for clip in (out / "clips").iterdir() if (out / "clips").is_dir() else []:
        assert (clip / DONE_NAME).is_file(), f"incomplete clip folder visible: {clip}"
        json.loads((clip / DONE_NAME).read_text())
    for record in (out / ".state").rglob("*.json"):
        record_data = json.loads(record.read_text())
        if record_data.get("kind") == "clip" and record_data["status"] == "ok":
            assert (out / "clips" / record_data["clip_id"] / DONE_NAME).is_file()
    for name in ("clips.parquet", "summary.md", "run.json", "config.yaml"):
        path = out / "manifest" / name
        if path.exists() and name == "clips.parquet":
            pq.read_table(path)
    # Temporary files may exist after a kill, but only under hidden names that are never final names.
    for path in out.rglob(f"*{TMP_PREFIX.lstrip('.')}*"):
        assert path.name.startswith(TMP_PREFIX), path


def stable_rows(out: Path) -> list[dict]:
    table = pq.read_table(out / "manifest" / "clips.parquet")
    return table.drop_columns(timing_columns(table.column_names)).to_pylist()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "RAY_ADDRESS"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    """The manifest of an uninterrupted run, as a user runs it: no Prefect server, a fresh local Ray."""
    tmp = tmp_path_factory.mktemp("base")
    base, log = tmp / "base", tmp / "cli.log"
    proc = start(cli_args(base), _clean_env(), log)
    assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
    printed = log.read_text()
    assert f"manifest: {base / 'manifest' / 'clips.parquet'}" in printed and "clips ok" in printed
    expected = stable_rows(base)
    assert sum(r["kind"] == "clip" for r in expected) == NUM_CLIPS
    return expected


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_flow_cli_kill_and_rerun_gives_the_same_manifest(backend, uninterrupted, prefect_harness, ray_local, tmp_path):
    """Killed at several moments and resumed on ``backend``, the run ends with the manifest of the
    uninterrupted one (which ran on the default backend: the backends agree too)."""
    from prefect.settings import PREFECT_API_URL

    log = tmp_path / "cli.log"
    # Reusing the test's Prefect API and Ray cluster saves start-up time.
    env = dict(_clean_env(), PREFECT_API_URL=PREFECT_API_URL.value())
    address = ray_local.get_runtime_context().gcs_address
    out = tmp_path / "crash"
    args = cli_args(out, "--ray-address", address, f"runtime.executor={backend}")
    kill_points = [
        ("inputs planned", lambda: count(out / ".state" / "inputs") >= 1),
        ("first clip published", lambda: count(out / ".state" / "clips") >= 1),
        ("all clips published, manifest next", lambda: count(out / ".state" / "clips") >= NUM_CLIPS),
    ]
    killed = []
    for name, condition in kill_points:
        proc = start(args, env, log)
        if kill_when(proc, condition):
            killed.append(name)
        check_nothing_half_written(out)
    print("killed at:", killed)
    assert len(killed) >= 2, f"too few runs were interrupted: {killed}"
    proc = start(args, env, log)
    assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
    check_nothing_half_written(out)

    assert stable_rows(out) == uninterrupted
    assert not [p for p in out.rglob(f"{TMP_PREFIX}*")], "temporary files left behind"
    assert not any((out / ".work").iterdir())
