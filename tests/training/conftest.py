"""Fixtures of the training tests: a latent cache of real sample-video clips (the cache job run on
the latent-cache tests' small preprocessing output, with their briefly trained tiny VAE), and the
synthetic caches of the datasets tests where exact values matter more than pictures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent


def load_test_module(name: str, path: Path):
    """A helper file of another test folder as a module (tests/ is not a package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def cache_fixtures():
    return load_test_module("anycharv_test_cache_fixtures", TESTS / "datasets" / "cache_fixtures.py")


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> dict:
    """{"data": cache folder, "encoders": {"vae", "image_encoder"} folders}: 6 clips of 8 frames from
    three sample videos at 64x64 (one video held out as val)."""
    from anycharv.config import load_config
    from anycharv.latent_cache.config import CacheJob, EncoderSource
    from anycharv.latent_cache.runner import run_cache
    from anycharv.model.tiny import build_tiny_components

    lc = load_test_module("anycharv_test_latent_cache_helpers", TESTS / "latent_cache" / "conftest.py")
    prep = load_test_module("anycharv_test_prep_output", TESTS / "latent_cache" / "prep_output.py")
    root = tmp_path_factory.mktemp("train-cache")
    lc.train_tiny_vae().save_pretrained(root / "vae")
    build_tiny_components(seed=0, with_vae=False)["image_encoder"].save_pretrained(root / "image_encoder")
    encoders = {"vae": str(root / "vae"), "image_encoder": str(root / "image_encoder")}
    prep_dir = prep.make_prep_output(root / "prep")
    job = load_config(CacheJob, None, ["cache.buckets=[[64,64]]", "runtime.executor=local", "runtime.progress=false",
                                       "cache.val_fraction=0.3"])
    run_cache(job, str(prep_dir), str(root / "cache"), EncoderSource(**encoders))
    return {"data": root / "cache", "encoders": encoders}


@pytest.fixture
def cache_writer():
    """The datasets tests' synthetic cache writer (``make_cache``, ``make_selfboost``, ``clips``)."""
    return cache_fixtures()


@pytest.fixture
def synthetic_cache(tmp_path) -> Path:
    """A stage-1 cache of 6 synthetic 64x64 clips (CLIP width 32, as the tiny networks) with
    self-boost shards in the default place (DATA/shards/boost), and tiny encoders recorded."""
    import json

    fx = cache_fixtures()
    clips = fx.clips(6, dim=32)
    fx.make_cache(tmp_path / "data", clips)
    fx.make_selfboost(tmp_path / "data" / "shards" / "boost", clips)
    (tmp_path / "data" / "encoders.json").write_text(json.dumps({"source": {"preset": "tiny"}, "identity": {}}))
    return tmp_path / "data"
