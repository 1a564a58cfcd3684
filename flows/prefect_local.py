"""A temporary Prefect API for one CLI run, started by us rather than by Prefect.

Prefect's own temporary server is a child in the caller's process group: Ctrl-C in a terminal
(SIGINT to the group) or a group SIGTERM kills it together with the run, and the flow then spends
minutes retrying to report its state to a dead API. This one runs in its own session, so a signal
meant for the run does not reach it; it dies with its parent (PR_SET_PDEATHSIG on Linux) and is
stopped at exit. It is the same server Prefect would start (uvicorn on the Prefect app, loopback,
no UI, on the database under PREFECT_HOME).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from anycharv.errors import AnyCharVError

LOOPBACK = "127.0.0.1"
PR_SET_PDEATHSIG = 1


class PrefectApiError(AnyCharVError, RuntimeError):
    """The temporary Prefect API could not be started."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _die_with_parent():
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies (Linux), so a
    SIGKILLed run leaves no server behind; None where prctl is missing."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)  # loaded before fork
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class TemporaryApi:
    """One uvicorn process serving the Prefect API on a free loopback port."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout_s: float, attempts: int = 3) -> str:
        """Start the server and wait until ``/api/health`` answers; returns the API URL."""
        env = dict(os.environ, PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
        env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        deadline = time.monotonic() + timeout_s
        for _ in range(attempts):
            port = _free_port()
            self.url = f"http://{LOOPBACK}:{port}/api"
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
                 "--host", LOOPBACK, "--port", str(port), "--log-level", "error", "--lifespan", "on"],
                env=env, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent())
            if self._wait_healthy(deadline):
                return self.url
            if self.process.poll() is None:  # alive but not answering in time
                break
            # exited early (e.g. the port was taken meanwhile): try another port
        code = self.process.poll() if self.process else None
        self.stop()
        raise PrefectApiError(
            f"the temporary Prefect API did not answer within {timeout_s:g} s"
            + (f" (server exit code {code})" if code is not None else "")
            + "; set PREFECT_API_URL to a running server (prefect server start), or raise "
              "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")

    def _wait_healthy(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ensure_api(timeout_s: float) -> TemporaryApi | None:
    """Start a temporary API unless one is configured (PREFECT_API_URL in the environment, in the
    active profile, or set by a test harness); returns it, or None."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return None
    return use_temporary_api(timeout_s)


def use_temporary_api(timeout_s: float) -> TemporaryApi:
    """Start a temporary API, point this process's Prefect at it (``PREFECT_API_URL``) and stop it at
    interpreter exit, restoring the environment."""
    api = TemporaryApi()
    url = api.start(timeout_s)
    os.environ["PREFECT_API_URL"] = url
    print(f"anycharv: temporary Prefect API at {url.removesuffix('/api')} (stopped at exit; set "
          f"PREFECT_API_URL to keep runs on a server)", file=sys.stderr)
    if "prefect" in sys.modules:  # already configured from the environment: reload it
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()

    def stop() -> None:
        api.stop()
        if os.environ.get("PREFECT_API_URL") == url:
            os.environ.pop("PREFECT_API_URL")

    atexit.register(stop)
    return api
