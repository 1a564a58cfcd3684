"""``anycharv preprocess`` in a subprocess, as a user runs it: a Ray address where no cluster answers
fails within the connect timeout with one line; Ctrl-C (SIGINT to the process group) and SIGTERM
stop a run within seconds with one line (130 / 143), leave nothing running, and the next run
finishes; Prefect keeps no pickles of our tasks' results or errors; the CLI's temporary Prefect API
dies with the CLI even when the CLI is SIGKILLed."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from anycharv.assets import asset_path

SMALL = [
    "decode.short_side=256", "split.clip_len=8", "split.min_len=8", "split.stride=24",
    "split.max_clips_per_video=2", "detect.imgsz=256", "mask.size=256", "pose.imgsz=256",
    "preview.num_frames=2", "preview.height=96", "runtime.progress=false",
]


def cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "anycharv.cli", "preprocess", "--input", str(asset_path("sports2d_demo.mp4")),
            "--output", str(out), *extra, *SMALL]


@pytest.fixture(scope="module")
def user_env(tmp_path_factory) -> dict[str, str]:
    """No Prefect server and no Ray cluster configured; Prefect's home (database, result storage)
    in a temporary folder shared by this module's runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "RAY_ADDRESS"))}
    return dict(env, PREFECT_HOME=str(tmp_path_factory.mktemp("prefect-home")))


def stored_results(env: dict[str, str]) -> list[Path]:
    storage = Path(env["PREFECT_HOME"]) / "storage"
    return [p for p in storage.rglob("*") if p.is_file()] if storage.is_dir() else []


def test_cli_unreachable_ray_address_fails_within_the_timeout(prefect_harness, user_env, tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = dict(user_env, PREFECT_API_URL=PREFECT_API_URL.value())  # a running API: only the Ray wait counts
    before = set(stored_results(env))
    start = time.monotonic()
    proc = subprocess.run(cli(tmp_path / "out", "--ray-address", "127.0.0.1:1", "runtime.connect_timeout_s=3"),
                          env=env, capture_output=True, text=True, timeout=90)
    elapsed = time.monotonic() - start
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in err if line.startswith("anycharv preprocess: error:")]
    assert errors == [err[-1]] and "127.0.0.1:1" in errors[0], err[-5:]
    assert "Retry 1/1" not in proc.stderr  # a typed error: the task is not retried
    assert elapsed < 60, f"took {elapsed:.0f} s to give up on a dead address"
    # Prefect keeps no pickle of the failure: the tasks persist nothing, the flow's own error record
    # (which Prefect always writes) is JSON.
    new = set(stored_results(env)) - before
    assert len(new) <= 1, new
    for path in new:
        assert json.loads(path.read_text()).get("__exc_type__", "").endswith("RayConnectError"), path


def _wait_for_work(proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    """Until the run's own Ray cluster is up (its temporary root exists and Ray said so), then a
    little longer, so the signal lands while the clip stages work."""
    deadline = time.monotonic() + timeout

    def ray_is_up() -> bool:
        return bool(list(Path("/tmp").glob(f"anycharv-ray-{proc.pid}-*"))) and "Started a local Ray" in log.read_text()

    while not ray_is_up():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it got to work: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"the run did not get to work in time: {log.read_text()[-3000:]}")
        time.sleep(0.05)
    time.sleep(2)


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_cli_sigint_and_sigterm_stop_within_seconds_and_the_next_run_finishes(user_env, tmp_path):
    out = tmp_path / "out"
    for sig, code, word in [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]:
        log = tmp_path / f"{word}.log"
        # Its own process group, as a shell gives a job: the signal reaches the CLI and the Ray
        # processes it started, as Ctrl-C in a terminal (or a job runner's SIGTERM) would.
        proc = subprocess.Popen(cli(out), env=user_env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        _wait_for_work(proc, log)
        os.killpg(proc.pid, sig)
        start = time.monotonic()
        try:
            returncode = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"{sig.name}: still running after 60 s: {log.read_text()[-3000:]}")
        elapsed = time.monotonic() - start
        text = log.read_text()
        assert returncode == code, f"{sig.name}: exit {returncode}: {text[-3000:]}"
        assert elapsed < 15, f"{sig.name}: took {elapsed:.1f} s to exit"
        lines = text.strip().splitlines()
        assert lines[-1] == f"anycharv preprocess: {word}" and text.count("anycharv preprocess:") == 1, lines[-5:]
        for noise in ("Traceback", "ConnectError", "SIGTERM received"):
            assert noise not in text, f"{sig.name}: {noise!r} in the output: {text[-3000:]}"
        api = re.search(r"temporary Prefect API at http://127\.0\.0\.1:(\d+)", text)
        assert api and not _answers(int(api.group(1))), "the temporary Prefect API outlived the run"
        assert not list(Path("/tmp").glob(f"anycharv-ray-{proc.pid}-*")), "the run's Ray files were left behind"

    done = subprocess.run(cli(out), env=user_env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "manifest" / "clips.parquet").is_file()


def test_temporary_prefect_api_dies_with_a_killed_cli(user_env):
    """It runs in its own session (a group signal does not reach it), so it must not outlive a
    SIGKILLed parent either."""
    code = ("import time; from anycharv.flows.prefect_local import use_temporary_api; "
            "api = use_temporary_api(120); print(api.url, api.process.pid, flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", code], env=user_env, stdout=subprocess.PIPE, text=True)
    try:
        url, pid = parent.stdout.readline().split()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert _answers(port)
        assert psutil.Process(int(pid)).ppid() == parent.pid and os.getsid(int(pid)) != os.getsid(parent.pid)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 15
    while _answers(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _answers(port), "the temporary Prefect API outlived its SIGKILLed parent"
