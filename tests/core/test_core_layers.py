"""The import directions of DESIGN section 2, read from the source: flows -> (preprocessing,
training, inference) -> (datasets, model) -> core, with no way back up.

The command line (``anycharv.cli``, ``anycharv.commands``) lives in core for packaging but sits on
top: it is the one part of core allowed to import the layers above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("flows", "preprocessing", "training", "inference", "datasets", "model")
ENTRY_POINTS = ("anycharv.cli", "anycharv.commands")
# what each package may import besides itself and core
ALLOWED = {
    "core": set(),
    "model": set(),
    "datasets": {"model"},
    "preprocessing": {"datasets", "model"},
    "training": {"datasets", "model"},
    "inference": {"preprocessing", "datasets", "model"},
    "flows": {"preprocessing", "training", "inference", "datasets", "model"},
}


def _module_name(folder: str, path: Path) -> str:
    parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    root = ["anycharv"] if folder == "core" else ["anycharv", folder]
    return ".".join(root + parts)


def _imports(module: str, path: Path, is_package: bool):
    """Absolute names of the anycharv modules one source file imports (relative imports resolved)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            names = [base]
        else:
            continue
        yield from (name for name in names if name == "anycharv" or name.startswith("anycharv."))


def _layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"


def _violations(folder: str) -> list[str]:
    found = []
    for path in sorted((REPO / folder).rglob("*.py")):
        module = _module_name(folder, path)
        if folder == "core" and module.startswith(ENTRY_POINTS):
            continue
        for name in _imports(module, path, path.name == "__init__.py"):
            target = _layer(name)
            if target not in ("core", folder) and target not in ALLOWED[folder]:
                found.append(f"{path.relative_to(REPO)} imports {name}")
    return found


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_packages_import_only_the_layers_below(folder):
    assert (REPO / folder).is_dir()
    assert _violations(folder) == []


def test_the_checker_sees_imports_of_every_form(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("import anycharv.flows.serve\nfrom anycharv.model import pipeline\n"
                      "def f():\n    from ..inference import video\n")
    names = list(_imports("anycharv.datasets.probe", source, is_package=False))
    assert names == ["anycharv.flows.serve", "anycharv.model", "anycharv.inference"]
    assert [_layer(n) for n in names] == ["flows", "model", "inference"]
