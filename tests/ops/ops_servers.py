"""Real servers for the operations tests, started and stopped by the test: ``prefect server start``
and ``ray start --head``, each on 127.0.0.1 in its own session (so the whole process group is
stopped afterwards, and no other Prefect or Ray on the machine is touched)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM to the process group (the server and everything it started), SIGKILL after ``grace_s``."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children left behind by a leader that exited
    except ProcessLookupError:
        pass
    process.wait()


def wait_for(check, timeout_s: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode}\n{_tail(log)}")
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s:g} s\n{_tail(log)}")


def _tail(log: Path | None) -> str:
    return log.read_text()[-3000:] if log is not None and log.is_file() else ""


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """``prefect server start`` on a free loopback port with its own PREFECT_HOME; yields the
    environment that points Prefect clients at it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_API_URL=url, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_ENABLED="false")
    log = home / "server.log"
    home.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        process = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                    str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: _healthy(url), 120, "prefect server start", process, log)
        yield env
    finally:
        stop_group(process)


class RetryingTransport(httpx.HTTPTransport):
    """Retries the answers Prefect's own client retries (429, 502, 503): a server on a loaded machine
    answers 503 while its SQLite database is locked by one of its background services."""

    RETRY = (429, 502, 503)

    def __init__(self, attempts: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.attempts = attempts

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.attempts):
            response = super().handle_request(request)
            if response.status_code not in self.RETRY or attempt == self.attempts - 1:
                return response
            response.close()
            time.sleep(min(0.5 * 2 ** attempt, 8.0))
        raise AssertionError("unreachable")


def api_client(env: dict[str, str]) -> httpx.Client:
    """An HTTP client for the REST API of the server that ``env`` points at."""
    return httpx.Client(base_url=env["PREFECT_API_URL"], timeout=30, transport=RetryingTransport())


@contextmanager
def ray_head(num_cpus: int = 2) -> Iterator[dict[str, str]]:
    """``ray start --head --block`` on 127.0.0.1 with its own temporary folder (short: Ray's socket
    paths have a length limit); yields {"address", "temp"}."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="rayh-", dir="/tmp")
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    log = Path(temp) / "head.log"
    with open(log, "w") as out:
        process = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                                    "--port", str(port), f"--num-cpus={num_cpus}", "--num-gpus=0",
                                    "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        wait_for(lambda: "Ray runtime started" in log.read_text(), 90, "ray start --head", process, log)
        yield {"address": address, "temp": temp}
    finally:
        stop_group(process)
        shutil.rmtree(temp, ignore_errors=True)


def actors_run(temp_root: str) -> Counter:
    """How many workers of each actor class ran on the cluster rooted at ``temp_root`` (each
    worker's log starts with ``:actor_name:<class>``)."""
    names = Counter()
    for path in Path(temp_root).glob("session_*/logs/worker-*.out"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(":actor_name:"):
                names[line.removeprefix(":actor_name:").strip()] += 1
                break
    return names
