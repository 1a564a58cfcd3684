"""The layers of docs/architecture.md, checked on the source: which package may import which, and
where Ray and Prefect may be imported. A new import across the rules fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Folder -> the anycharv packages it may import (besides itself). ``anycharv`` is core.
ALLOWED = {
    "core": set(),
    "model": {"core"},
    "datasets": {"core", "model"},
    "preprocessing": {"core", "model", "datasets"},
    "inference": {"core", "model", "datasets", "preprocessing"},
    "latent_cache": {"core", "model", "datasets", "preprocessing"},
    "training": {"core", "model", "datasets", "preprocessing", "latent_cache"},
    "self_boost": {"core", "model", "datasets", "preprocessing", "latent_cache", "training"},
    "evaluation": {"core", "model", "datasets", "preprocessing", "latent_cache", "training"},
    "flows": {"core", "model", "datasets", "preprocessing", "inference", "latent_cache", "training", "self_boost",
              "evaluation"},
}
PACKAGE_OF = {"anycharv." + name: name for name in ALLOWED if name != "core"}
# The command line sits on top of everything: it parses arguments and calls flows and APIs.
CLI = ("core/cli.py", "core/commands/")
RAY_MODULES = {"core/ray_session.py", "core/executor/ray_base.py", "core/executor/ray_actors.py",
               "core/executor/ray_data.py", "training/launcher.py", "training/ray_context.py"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def _layer(module: str) -> str | None:
    if module != "anycharv" and not module.startswith("anycharv."):
        return None
    for prefix, name in PACKAGE_OF.items():
        if module == prefix or module.startswith(prefix + "."):
            return name
    return "core"


def _sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_packages_import_only_the_layers_below_them(folder):
    wrong = []
    for path in _sources(folder):
        if str(path.relative_to(REPO)).startswith(CLI):
            continue
        for module in _imports(path):
            layer = _layer(module)
            if layer is not None and layer != folder and layer not in ALLOWED[folder]:
                wrong.append(f"{path.relative_to(REPO)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_ray_and_prefect_stay_in_their_places():
    wrong = []
    for folder in ALLOWED:
        for path in _sources(folder):
            rel = str(path.relative_to(REPO))
            for module in _imports(path):
                top = module.split(".")[0]
                if top == "ray" and rel not in RAY_MODULES:
                    wrong.append(f"{rel} imports {module} (Ray: executor backends, Ray Train launcher)")
                if top in ("prefect", "prefect_ray") and folder != "flows":
                    wrong.append(f"{rel} imports {module} (Prefect belongs to flows/)")
    assert not wrong, "\n".join(wrong)
