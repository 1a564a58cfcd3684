"""Fixtures of the self-boost tests: a real small latent cache, made by the cache job from the
latent-cache tests' preprocessing output (``tests/latent_cache/prep_output.py``: three source
videos, two clips each, two buckets; one video is the validation split) with the tiny encoders,
and the tiny stage-1 networks saved as an exported model folder."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

PREP_MODULE = "anycharv_test_prep_output"  # the name tests/latent_cache/conftest.py registers it under
CACHE_OVERRIDES = ["cache.buckets=[[64,32],[32,64]]", "cache.val_fraction=0.3", "cache.samples_per_shard=2",
                   "cache.num_references=2", "runtime.executor=local", "runtime.progress=false"]


def _prep_output_module():
    if PREP_MODULE not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "latent_cache" / "prep_output.py"
        spec = importlib.util.spec_from_file_location(PREP_MODULE, path)
        sys.modules[PREP_MODULE] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[PREP_MODULE])
    return sys.modules[PREP_MODULE]


@pytest.fixture(scope="session")
def prep_output(tmp_path_factory) -> Path:
    return _prep_output_module().make_prep_output(tmp_path_factory.mktemp("boost-prep") / "prep")


@pytest.fixture(scope="session")
def built_cache(prep_output, tmp_path_factory) -> Path:
    from anycharv.config import load_config
    from anycharv.latent_cache.config import CacheJob, EncoderSource
    from anycharv.latent_cache.runner import run_cache

    out = tmp_path_factory.mktemp("boost-cache") / "cache"
    summary = run_cache(load_config(CacheJob, None, CACHE_OVERRIDES), str(prep_output), str(out),
                        EncoderSource(preset="tiny"))
    assert summary.samples == 6 and summary.splits == {"train": 4, "val": 2}
    return out


@pytest.fixture
def cache_dir(built_cache, tmp_path) -> Path:
    """A copy of the cache per test (the default output is inside it)."""
    return Path(shutil.copytree(built_cache, tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny stage-1 networks (the preset's) as diffusers folders, as an export writes them."""
    from anycharv.model.tiny import build_tiny_components

    root = tmp_path_factory.mktemp("boost-model") / "model"
    networks = build_tiny_components(seed=0, with_vae=False, with_image_encoder=False)
    for name, module in networks.items():
        module.save_pretrained(root / name)
    return root
