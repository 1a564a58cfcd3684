"""``load_encoders``: the VAE and CLIP image encoder alone, from each place a user may have them."""

from __future__ import annotations

import pytest

from anycharv.errors import InputError, WeightsError
from anycharv.model.components import load_encoders
from anycharv.model.tiny import build_tiny_components


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all((sa[k] == sb[k]).all() for k in sa)


def test_tiny_preset_gives_the_tiny_pipeline_s_encoders():
    encoders = load_encoders(preset="tiny")
    full = build_tiny_components(seed=0)
    assert set(encoders) == {"vae", "image_encoder"}
    assert _same_weights(encoders["vae"], full["vae"]) and _same_weights(encoders["image_encoder"],
                                                                         full["image_encoder"])


def test_subfolders_and_explicit_folders(tmp_path):
    tiny = build_tiny_components(seed=3)
    tiny["vae"].save_pretrained(tmp_path / "release" / "vae")
    tiny["image_encoder"].save_pretrained(tmp_path / "release" / "image_encoder")
    found = load_encoders(str(tmp_path / "release"))
    assert _same_weights(found["vae"], tiny["vae"]) and _same_weights(found["image_encoder"], tiny["image_encoder"])
    explicit = load_encoders(vae=str(tmp_path / "release" / "vae"),
                             image_encoder=str(tmp_path / "release" / "image_encoder"))
    assert _same_weights(explicit["vae"], tiny["vae"])


def test_official_release_fixture_files(reference_dir):
    found = load_encoders(str(reference_dir))  # its weights/ and configs/ folders
    assert set(found) == {"vae", "image_encoder"}


def test_missing_encoders_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="vae, image_encoder"):
        load_encoders(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="--vae"):
        load_encoders(vae=str(tmp_path / "empty"), image_encoder=str(tmp_path / "empty"))
