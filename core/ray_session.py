"""Ray for one run: join a cluster within a bounded time, or start a local one that answers on
loopback only and leaves no files behind.

Why not plain ``ray.init``:

* Joining an address where no cluster answers retries for 20 x ~40 s inside ``ray.init``; Ray's
  own timeouts are read once, when Ray is imported, so they cannot be set per call. Here the
  address is probed first with a gRPC health check (the GCS answers it, without auth), until
  ``connect_timeout_s`` runs out; the failure is a typed error naming the address.
* On Linux Ray swaps 127.0.0.1 for the machine's external address and then listens on all
  interfaces (GCS, raylet, workers, agents, metrics). ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is
  what keeps a node on loopback; Ray reads it at import, so while a local cluster starts (or a
  loopback address is joined) the same switch is also held on the imported module. The started
  processes read the variable themselves.
* A local cluster gets its own temporary root (``_temp_dir``), removed after shutdown: session
  logs, sockets and spilled objects of this run go with it; other clusters on the machine, and
  ``/tmp/ray``, are never touched.
* Ray's core worker installs a SIGTERM handler that dumps a C++ stack and aborts (exit 134). And
  a Python handler that raises anything but KeyboardInterrupt inside ``ray.wait``/``ray.get``
  (Prefect's raises TerminationSignal) surfaces as a SystemError, which Prefect retries. So while
  the session is up, SIGTERM unwinds it as an interrupt; once Ray is shut down and its files are
  gone, the signal is sent again to the handler that was there before (Prefect's, the CLI's, or
  the default action).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

import ray

from anycharv.errors import AnyCharVError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
TEMP_PREFIX = "anycharv-ray-"
DEFAULT_CONNECT_TIMEOUT_S = 15.0
_HEALTH_METHOD = "/grpc.health.v1.Health/Check"
# A driver whose cluster is gone (SIGTERM to the process group) waits this long at shutdown to
# flush task events to the dead GCS (Ray's default: 5 s); nobody reads them here (no dashboard).
SYSTEM_CONFIG = {"task_events_shutdown_flush_timeout_ms": 500}


class RayConnectError(AnyCharVError, ConnectionError):
    """No Ray cluster answered at the given address in time (or it refused us)."""


# ----------------------------------------------------------------------------- session


@contextmanager
def ray_session(runtime: Any) -> Iterator[bool]:
    """Use the Ray connection the caller made, else join ``runtime.ray_address`` / ``RAY_ADDRESS``
    (waiting at most ``runtime.connect_timeout_s``), else start a local loopback-only cluster with
    ``runtime.num_cpus`` / ``runtime.num_gpus``. Only a connection made here is closed here (an
    existing cluster keeps running); a local cluster's files are removed. Yields whether this call
    connected."""
    if ray.is_initialized():
        yield False
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = runtime.ray_address or os.environ.get("RAY_ADDRESS") or None
    temp_root = None
    sigterm = _SigtermDuringRay()  # before ray.init replaces the handler
    try:
        if address and address != "local":
            join_cluster(address, getattr(runtime, "connect_timeout_s", None) or DEFAULT_CONNECT_TIMEOUT_S)
        else:
            temp_root = start_local_cluster(runtime.num_cpus, runtime.num_gpus)
        sigterm.arm()
        try:
            yield True
        finally:
            sigterm.quiet()
            if temp_root is None:
                ray.shutdown()
            else:
                stop_local_cluster(temp_root)
    finally:
        sigterm.release()


class _SigtermDuringRay:
    """SIGTERM while Ray is up. ``ray.init`` puts in its own handlers (Python: exit 15; C++: stack
    dump and abort), and inside Ray's blocking calls only KeyboardInterrupt gets out of a Python
    handler cleanly. So once armed, SIGTERM raises KeyboardInterrupt; after ``quiet()`` (cleanup)
    it is only noted; ``release()`` puts back the handler from before and sends it a noted SIGTERM.
    Main thread only: signal handlers live there."""

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self.previous = signal.getsignal(signal.SIGTERM) if self.active else None
        self.received = False
        self.interrupt = False

    def arm(self) -> None:
        if not self.active:
            return
        if self.previous is signal.SIG_IGN:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            return
        self.interrupt = True
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        self.received = True
        if self.interrupt:
            self.interrupt = False  # once: a second SIGTERM must not break into the cleanup
            raise KeyboardInterrupt("SIGTERM")

    def quiet(self) -> None:
        self.interrupt = False

    def release(self) -> None:
        if not self.active:
            return
        signal.signal(signal.SIGTERM, self.previous if self.previous is not None else signal.SIG_DFL)
        if self.received:
            signal.raise_signal(signal.SIGTERM)


@contextmanager
def _loopback_node() -> Iterator[None]:
    """Keep "127.0.0.1" a loopback address while Ray starts or joins a node (see module doc)."""
    from ray._private import ray_constants

    previous = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        with _env(CLUSTER_SWITCH, "0"):  # the processes started now keep their copy
            yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


# ----------------------------------------------------------------------------- local cluster


def local_init_kwargs(num_cpus: int | None = None, num_gpus: int | None = None,
                      temp_root: str | None = None) -> dict[str, Any]:
    """``ray.init`` arguments of a local cluster on loopback without a dashboard (use them inside
    ``_loopback_node``, as ``start_local_cluster`` does)."""
    kwargs: dict[str, Any] = dict(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                                  _node_ip_address=LOOPBACK, _system_config=dict(SYSTEM_CONFIG))
    if temp_root:
        kwargs["_temp_dir"] = temp_root
    return kwargs


def _temp_base() -> str:
    # Ray's socket paths must stay under ~107 characters: prefer the short /tmp (as Ray does).
    return "/tmp" if os.path.isdir("/tmp") and os.access("/tmp", os.W_OK) else tempfile.gettempdir()


def start_local_cluster(num_cpus: int | None = None, num_gpus: int | None = None, *,
                        log_to_driver: bool = True) -> str:
    """Start a local cluster bound to loopback in a fresh temporary root; returns that root (hand
    it to ``stop_local_cluster``)."""
    temp_root = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=_temp_base())
    try:
        with _loopback_node():
            ray.init(**local_init_kwargs(num_cpus, num_gpus, temp_root), log_to_driver=log_to_driver)
    except BaseException:
        ray.shutdown()
        _remove_tree(temp_root)
        raise
    return temp_root


def stop_local_cluster(temp_root: str) -> None:
    """Shut the local cluster down, then remove its temporary root (logs, sockets, spill files)."""
    ray.shutdown()
    _remove_tree(temp_root)


def _remove_tree(path: str, attempts: int = 5) -> None:
    """Remove ``path``; a process that is still exiting may write a last log line meanwhile, so a
    failed attempt is retried briefly, and a last failure is logged with the path."""
    for attempt in range(attempts):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if attempt == attempts - 1:
                log.warning("could not remove Ray's temporary folder %s: %s", path, exc)
                return
            time.sleep(0.2)


# ----------------------------------------------------------------------------- joining


def join_cluster(address: str, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
    """``ray.init(address=...)`` that fails within about ``timeout_s`` with a ``RayConnectError``
    naming ``address`` when nothing answers there."""
    deadline = time.monotonic() + timeout_s
    host = _host_of(address)
    loopback = host in LOOPBACK_NAMES
    with _loopback_node() if loopback else nullcontext():
        target = resolve_address(address)
        wait_for_cluster(target, timeout_s, address)
        # What is left of the budget also bounds ray.init's own retries (one per second when the
        # GCS answers but refuses the driver, e.g. missing auth token); read at call time.
        retries = str(max(1, math.ceil(deadline - time.monotonic())))
        _use_token_if_available()
        with _env("RAY_gcs_server_port_wait_time_s", retries):
            try:
                ray.init(address=address, log_to_driver=True)
            except (ConnectionError, RuntimeError) as exc:
                raise RayConnectError(f"cannot join the Ray cluster at {address}: {_cause(exc)}") from exc


def _use_token_if_available() -> None:
    """Send our auth token when joining, if we have one and RAY_AUTH_MODE does not say otherwise.

    ``ray start --head`` turns token auth on by default (Ray 2.5x+), but a driver joining by address
    leaves it off unless RAY_AUTH_MODE=token is set, and is then refused (InvalidAuthToken) although
    the token sits in ~/.ray/auth_token. Ray's own switch (env + its cached config) is used; a
    cluster without auth ignores the token."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token auth
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def resolve_address(address: str) -> str:
    """host:port that a driver connects to for ``address`` ('auto' is looked up as Ray does)."""
    if address.startswith("ray://"):
        return address[len("ray://"):].split("/", 1)[0]
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address_or_die

        try:
            return canonicalize_bootstrap_address_or_die(address)
        except ConnectionError as exc:
            raise RayConnectError(f"cannot join the Ray cluster at {address}: {exc}") from exc
    if _host_of(address) in LOOPBACK_NAMES:
        return address  # held on loopback by _loopback_node
    from ray._private.services import canonicalize_bootstrap_address

    try:
        return canonicalize_bootstrap_address(address) or address
    except ValueError as exc:
        raise RayConnectError(f"invalid Ray address {address!r}: {exc}") from exc


def wait_for_cluster(target: str, timeout_s: float, address: str | None = None) -> None:
    """For up to ``timeout_s``, ask the gRPC server at ``target`` (host:port) for its health; any
    answer from a gRPC server counts. Raises ``RayConnectError`` naming the address."""
    import grpc

    deadline = time.monotonic() + timeout_s
    address = address or target
    named = address if target == address else f"{address} ({target})"
    last = "no answer"
    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary(_HEALTH_METHOD)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                check(b"", timeout=min(left, 2.0))
                return
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    return  # a gRPC server answered (e.g. a Ray Client server without health service)
                last = exc.details() or code.name
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
    raise RayConnectError(
        f"no Ray cluster answered at {named} within {timeout_s:g} s ({last}); check "
        f"--ray-address / runtime.ray_address / RAY_ADDRESS (empty starts a local cluster)")


def _host_of(address: str) -> str:
    rest = address.split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    return rest.rsplit(":", 1)[0] if ":" in rest else rest


def _cause(exc: BaseException) -> str:
    """The innermost message of an exception chain (Ray wraps the useful one twice)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[0] if text else ''}"
    if any(word in message for word in ("Authentication", "AuthToken", "Unauthenticated")):
        message += " (the cluster uses token auth: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or ~/.ray/auth_token)"
    return message


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
