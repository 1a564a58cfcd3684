"""Shared fixtures: the parity fixture folder, a real local Ray cluster, a real Prefect harness."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE_DIR = REPO.parent / "shared" / "reference" / "anycharv-tiny-a"


def pytest_configure(config):
    # Offline by default: nothing in the test suite may reach the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect binds its console log handler to the sys.stderr of the moment it is first imported.
    # Import it now, under the session's capture: imported first inside a test that uses capsys,
    # every later flow run would log to that test's closed stream (ValueError in rich).
    import prefect.main  # noqa: F401


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Golden data folder of the official implementation (ANYCHARV_REFERENCE_DIR, default set A)."""
    path = Path(os.environ.get("ANYCHARV_REFERENCE_DIR", DEFAULT_REFERENCE_DIR))
    if not (path / "weights").is_dir():
        raise FileNotFoundError(f"ANYCHARV_REFERENCE_DIR={path}: no weights/ folder (expected the golden-data format)")
    return path


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray cluster with 2 CPUs, shared by the session's tests; like the runs' own, it
    listens on loopback only and its files are removed afterwards."""
    import ray

    from anycharv.ray_session import start_local_cluster, stop_local_cluster

    temp_root = None if ray.is_initialized() else start_local_cluster(num_cpus=2, log_to_driver=False)
    yield ray
    if temp_root is None:
        ray.shutdown()
    else:
        stop_local_cluster(temp_root)


@pytest.fixture(scope="session")
def prefect_harness():
    """Real Prefect (its test harness: a temporary database and API)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
