"""`anycharv infer --weights`: the official layout (golden set A) and our converted folders load alike."""

from __future__ import annotations

import av
import pytest
import torch

from anycharv.assets import asset_path
from anycharv.cli import main


def test_official_and_converted_weights_load_the_same_networks(reference_dir, tmp_path, capsys):
    from anycharv.model.components import load_components

    converted = tmp_path / "converted"
    assert main(["convert-official", str(reference_dir), str(converted)]) == 0
    official = load_components(str(reference_dir))
    ours = load_components(str(converted))
    assert sorted(official) == sorted(ours) == ["denoising_unet", "image_encoder", "pose_guider",
                                                "reference_unet", "vae"]
    for name in official:
        a, b = official[name].state_dict(), ours[name].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name

    out = tmp_path / "out.mp4"
    rc = main(["infer", "--weights", str(converted), "--ref", str(asset_path("grace_hopper.jpg")), "--video",
               str(asset_path("pose2sim_cam01.mp4")), "--out", str(out), "--max-frames", "4", "--size", "64",
               "--steps", "1", "--no-ref-segment"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "RANDOM" not in err
    with av.open(str(out)) as c:
        stream = c.streams.video[0]
        assert stream.average_rate == 60 and sum(1 for _ in c.decode(stream)) == 4


def test_weights_folder_without_vae_names_the_missing_parts(reference_dir, tmp_path):
    from anycharv.errors import WeightsError
    from anycharv.model.components import load_components

    release = tmp_path / "release"
    release.mkdir()
    for name in ("reference_unet", "denoising_unet", "pose_guider"):
        (release / f"{name}.safetensors").symlink_to(reference_dir / "weights" / f"{name}.safetensors")
    configs = release / "configs"
    configs.mkdir()
    for name in ("reference_unet", "denoising_unet", "pose_guider"):
        (configs / f"{name}.json").symlink_to(reference_dir / "configs" / f"{name}.json")
    with pytest.raises(WeightsError, match="--vae and --image-encoder"):
        load_components(str(release))
    # Given separately (diffusers / transformers folders), they complete the release.
    converted = tmp_path / "converted"
    assert main(["convert-official", str(reference_dir), str(converted)]) == 0
    components = load_components(str(release), vae=str(converted / "vae"),
                                 image_encoder=str(converted / "image_encoder"))
    assert sorted(components) == ["denoising_unet", "image_encoder", "pose_guider", "reference_unet", "vae"]
