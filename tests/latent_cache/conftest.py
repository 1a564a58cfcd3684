"""Fixtures of the latent-cache tests: a small preprocessing output (``prep_output.py``) and tiny
encoders, the VAE trained for a few seconds to reconstruct the sample videos (random weights decode
to noise, which could not show that a cached latent belongs to its frames)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from anycharv.assets import asset_path
from anycharv.preprocessing.video_io import read_frames


def train_tiny_vae(steps: int = 250, seed: int = 0, patch: int = 32):
    """The tiny VAE fitted to the first 48 frames (64x64) of three sample videos."""
    from anycharv.model.tiny_vae_fit import fit_tiny_vae

    frames = np.concatenate([read_frames(str(asset_path(n)), 0, 48, (64, 64)) for n in
                             ("pose2sim_cam01.mp4", "pose2sim_cam02.mp4", "sports2d_demo.mp4")])
    return fit_tiny_vae(frames, steps=steps, seed=seed, patch=patch)


@pytest.fixture(scope="session")
def encoder_dirs(tmp_path_factory) -> dict[str, str]:
    """Folders ``vae`` (trained to reconstruct) and ``image_encoder`` (tiny, random) in diffusers form."""
    from anycharv.model.tiny import build_tiny_components

    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    train_tiny_vae().save_pretrained(root / "vae")
    build_tiny_components(seed=0, with_vae=False)["image_encoder"].save_pretrained(root / "image_encoder")
    return {"vae": str(root / "vae"), "image_encoder": str(root / "image_encoder")}


def load_prep_output_module():
    """``prep_output.py`` as a module (tests/ is not a package)."""
    name = "anycharv_test_prep_output"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("prep_output.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


@pytest.fixture
def prep_dir(tmp_path) -> Path:
    return load_prep_output_module().make_prep_output(tmp_path / "prep")

