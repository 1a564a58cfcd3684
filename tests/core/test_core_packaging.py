"""Install layout: every folder is importable as anycharv.<folder>, and nothing generic (``model``,
``datasets``) lands at the top level of site-packages; the CLI starts; torchvision imports on CPU."""

from __future__ import annotations

import importlib
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("folder", ["flows", "preprocessing", "training", "model", "datasets", "inference",
                                    "latent_cache", "self_boost", "evaluation"])
def test_folders_import_as_namespace(folder):
    module = importlib.import_module(f"anycharv.{folder}")
    assert Path(module.__file__).resolve().parent == REPO / folder


def test_no_generic_top_level_names_in_site_packages(tmp_path):
    site = Path(sysconfig.get_paths()["purelib"])
    for name in ["model", "datasets", "flows", "preprocessing", "training", "inference", "latent_cache", "self_boost",
                 "evaluation", "core"]:
        assert not (site / name).exists(), f"{name} leaked into {site}"
    # Outside the checkout, generic names resolve to nothing of ours (Hugging Face's `datasets`,
    # if installed, stays reachable).
    code = (
        "import importlib.util, sys\n"
        "for name in ['model', 'datasets', 'flows', 'preprocessing', 'training', 'inference', 'core']:\n"
        "    spec = importlib.util.find_spec(name)\n"
        "    origin = (spec.origin or '') if spec else ''\n"
        f"    assert not origin.startswith({str(REPO)!r}), (name, origin)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_cli_help_lists_commands():
    from anycharv.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"preprocess", "infer", "convert-official", "assets"}
    out = subprocess.run([sys.executable, "-m", "anycharv.cli", "--help"], capture_output=True, text=True, check=True)
    assert "usage: anycharv" in out.stdout
    for name, subparser in sub.choices.items():
        text = subparser.format_help()
        assert f"anycharv {name}" in text and len(text.splitlines()) > 3, f"{name} --help is too thin"


def test_torchvision_and_ultralytics_import():
    # On CPU machines the registry's torchvision is a CUDA build; tools/apply_torchvision_fix.py makes
    # it import (and run nms) only where needed.
    code = (
        "import torch, torchvision; from torchvision.ops import nms;"
        "k = nms(torch.tensor([[0,0,10,10],[1,1,11,11],[50,50,60,60.]]), torch.tensor([.9,.8,.7]), .5);"
        "assert k.tolist() == [0, 2], k; import ultralytics, diffusers"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
