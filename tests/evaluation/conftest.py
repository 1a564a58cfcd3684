"""Fixtures of the evaluation tests (built by ``eval_fixtures.py``): a real small latent cache made
by the cache job with the tiny encoders, the tiny networks as an exported model folder, and real
metric networks with random weights in the files the optional metrics read."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

FIXTURES_MODULE = "anycharv_test_eval_fixtures"


def eval_fixtures():
    """``eval_fixtures.py`` as a module (tests/ is not a package)."""
    if FIXTURES_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(FIXTURES_MODULE, Path(__file__).with_name("eval_fixtures.py"))
        sys.modules[FIXTURES_MODULE] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[FIXTURES_MODULE])
    return sys.modules[FIXTURES_MODULE]


@pytest.fixture(scope="session")
def eval_cache(tmp_path_factory) -> Path:
    """The cache: 6 clips of 8 frames (4 train, 2 val), buckets 64x32 and 32x64. Read-only: copy it first."""
    return eval_fixtures().build_cache(tmp_path_factory.mktemp("eval-cache"))


@pytest.fixture(scope="session")
def eval_model(tmp_path_factory) -> Path:
    return eval_fixtures().build_model(tmp_path_factory.mktemp("eval-model") / "model")


@pytest.fixture(scope="session")
def metric_weights(tmp_path_factory) -> dict[str, str]:
    return eval_fixtures().build_metric_weights(tmp_path_factory.mktemp("metric-weights"))
