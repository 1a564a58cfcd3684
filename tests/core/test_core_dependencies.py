"""Every dependency in pyproject.toml is imported by the code, or is listed here with the reason
it is needed without an import; the list itself stays honest (nothing on it is imported)."""

from __future__ import annotations

import ast
import re
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[2]
RUNTIME_FOLDERS = ("core", "flows", "preprocessing", "latent_cache", "self_boost", "training", "evaluation", "model",
                   "datasets", "inference", "tools", "benchmarks")
# needed although no source file imports them
INDIRECT = {
    "accelerate": "diffusers' from_pretrained skips the random init only with it; enable_model_cpu_offload needs it",
    "fastapi": "upper bound for prefect 3.8.8's server",
    "sqlalchemy": "upper bound for prefect 3.8.8's scheduler",
    "lap": "ultralytics' ByteTrack/BoT-SORT trackers import it",
    "tensorboard": "training's event files: torch.utils.tensorboard (imported) writes them through it",
}
INDIRECT_TEST = {"pytest-timeout": "pytest plugin behind `timeout` in [tool.pytest.ini_options]",
                 "ruff": "the linter `make lint` runs (a command, never imported)"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(specs: list[str]) -> list[str]:
    return [_norm(re.match(r"[A-Za-z0-9._-]+", spec).group(0)) for spec in specs]


def _imported_distributions(folders) -> set[str]:
    """Distributions whose top-level modules the sources import (absolute imports only)."""
    owners = {module: {_norm(d) for d in dists} for module, dists in packages_distributions().items()}
    found = set()
    for folder in folders:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    found |= owners.get(module.split(".")[0], set())
    return found


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_every_runtime_dependency_is_imported_or_explained(project):
    declared = _requirement_names(project["dependencies"])
    imported = _imported_distributions(RUNTIME_FOLDERS)
    assert [name for name in declared if name not in imported and name not in INDIRECT] == []
    assert sorted(set(INDIRECT) - set(declared)) == []  # no reason kept for a dropped dependency
    assert sorted(set(INDIRECT) & imported) == []  # imported now: take it off the list


def test_every_test_dependency_is_imported_or_explained(project):
    declared = _requirement_names(project["optional-dependencies"]["test"])
    imported = _imported_distributions(["tests"])
    assert [name for name in declared if name not in imported and name not in INDIRECT_TEST] == []
    assert sorted(set(INDIRECT_TEST) & imported) == []
