"""``anycharv.ray_session`` against real Ray: joining an address where no cluster answers fails in
bounded time with a typed error naming it; a local cluster listens on loopback only and leaves no
files behind; SIGTERM during ``ray.wait`` unwinds the session, then reaches the caller's handler."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from anycharv.errors import AnyCharVError
from anycharv.ray_session import RayConnectError, join_cluster, wait_for_cluster

# A child that starts a local session, uses it (a task and an actor), reports, then waits: on stdin
# (a line ends it normally), or in ray.wait on a task that never ends ("wait"). Its own SIGTERM
# handler (installed before Ray) reports whether the session's files were gone by then, exits 143.
CHILD = r"""
import json, os, signal, sys, time
import ray
from anycharv.preprocessing.runtime import RuntimeConfig
from anycharv.ray_session import ray_session

def on_term(signum, frame):
    print(json.dumps({"handler_ran_after_cleanup": not os.path.exists(root)}), flush=True)
    raise SystemExit(143)

signal.signal(signal.SIGTERM, on_term)
with ray_session(RuntimeConfig(num_cpus=1)) as started:
    @ray.remote
    class Echo:
        def pid(self):
            return os.getpid()

    @ray.remote
    def forever():
        time.sleep(3600)

    actor_pid = ray.get(Echo.remote().pid.remote())
    session_dir = ray._private.worker._global_node.get_session_dir_path()
    root = os.path.dirname(session_dir)
    print(json.dumps({"started": started, "session_dir": session_dir, "actor_pid": actor_pid,
                      "gcs": ray.get_runtime_context().gcs_address}), flush=True)
    if sys.argv[1:] == ["wait"]:
        ray.wait([forever.remote()])  # like the executor: no timeout
    else:
        sys.stdin.readline()
print("done", flush=True)
"""


def start_child(mode: str) -> tuple[subprocess.Popen, dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=60)
        raise AssertionError(f"the child did not start a session: {proc.stderr.read()[-3000:]}")
    return proc, json.loads(line)


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def listening(processes: list[psutil.Process]) -> list[tuple[str, str, int]]:
    """(process name, ip, port) of every listening TCP and bound UDP socket of ``processes``."""
    found = []
    for proc in processes:
        try:
            name = proc.name()
            conns = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM and conn.laddr and not conn.raddr):
                found.append((name, conn.laddr.ip, conn.laddr.port))
    return found


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root] + root.children(recursive=True)


@pytest.fixture
def children():
    """Children started by a test; killed if the test left one running."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_local_session_listens_on_loopback_only_and_removes_its_files(children):
    proc, info = start_child("stdin")
    children.append(proc)
    assert info["started"] and info["gcs"].startswith("127.0.0.1:"), info
    sockets: set = set()
    for _ in range(3):  # agents and exporters bind while the node settles
        sockets.update(listening(tree(proc.pid)))
        time.sleep(0.5)
    names = {name for name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets  # the check saw the cluster's servers
    exposed = sorted(s for s in sockets if not _is_loopback(s[1]))
    assert not exposed, f"Ray processes of a local session listen beyond loopback: {exposed}"

    session_dir = Path(info["session_dir"])
    assert session_dir.is_dir() and not str(session_dir).startswith("/tmp/ray/")
    out, err = proc.communicate("\n", timeout=60)
    assert proc.returncode == 0 and "done" in out, err[-3000:]
    assert not session_dir.parent.exists(), f"the session's files were left behind: {session_dir.parent}"
    assert not list(Path("/tmp/ray").glob(f"session_*_{proc.pid}")), "a session was written under /tmp/ray"


def test_sigterm_in_ray_wait_cleans_up_then_reaches_the_callers_handler(children):
    proc, info = start_child("wait")
    children.append(proc)
    time.sleep(1)  # into ray.wait
    proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    proc.wait(timeout=60)
    out, err = proc.stdout.read(), proc.stderr.read()
    # Ray's own handler would dump a C++ stack and abort (-6); a Python handler that raised inside
    # ray.wait would come out as a SystemError. Here the session unwinds, removes its files, and
    # the caller's handler ends the process.
    assert proc.returncode == 143, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"handler_ran_after_cleanup": True}
    assert "SIGTERM received" not in err and "SystemError" not in err, err[-3000:]
    assert time.monotonic() - start < 20


def test_join_dead_address_fails_within_timeout_naming_it():
    start = time.monotonic()
    with pytest.raises(RayConnectError) as caught:
        join_cluster("127.0.0.1:1", timeout_s=2)
    elapsed = time.monotonic() - start
    assert isinstance(caught.value, AnyCharVError)
    assert "127.0.0.1:1" in str(caught.value) and "within 2 s" in str(caught.value)
    assert 1.5 < elapsed < 6, elapsed  # it waited for the cluster, but no longer than asked


def test_join_a_listener_that_is_not_ray_fails_within_timeout():
    """Something listens there, but not a Ray cluster (ray.init would retry for ~13 minutes)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer_http() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed at the end of the test
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer_http, daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        with pytest.raises(RayConnectError, match=f"127.0.0.1:{port}"):
            join_cluster(f"127.0.0.1:{port}", timeout_s=2)
        assert time.monotonic() - start < 6
    finally:
        server.close()


def test_wait_for_a_live_cluster_returns_at_once(ray_local):
    start = time.monotonic()
    wait_for_cluster(ray_local.get_runtime_context().gcs_address, timeout_s=10)
    assert time.monotonic() - start < 3


def test_shared_test_cluster_listens_on_loopback_only(ray_local):
    ray_processes = [p for p in psutil.Process().children(recursive=True)
                     if p.name() in ("gcs_server", "raylet") or p.name().startswith("ray::")
                     or any("/ray/" in part for part in p.cmdline())]
    sockets = listening(ray_processes)
    assert {"gcs_server", "raylet"} <= {name for name, _, _ in sockets}, sockets
    exposed = sorted(s for s in sockets if not _is_loopback(s[1]))
    assert not exposed, f"the ray_local cluster listens beyond loopback: {exposed}"
