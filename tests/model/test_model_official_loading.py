"""Official-layout loading: key/shape checks with named errors, release (.pth) layout, save/load
round trip, and the ``anycharv convert-official`` CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from anycharv.errors import WeightsError
from anycharv.model.denoising_unet import DenoisingUNet3D
from anycharv.model.official import load_official_components
from anycharv.model.pose_guider import PoseGuider
from anycharv.model.reference_unet import ReferenceUNet2D

CLASSES = {"reference_unet": ReferenceUNet2D, "denoising_unet": DenoisingUNet3D, "pose_guider": PoseGuider}


@pytest.fixture(scope="module")
def components(reference_dir):
    return load_official_components(reference_dir)


@pytest.fixture(scope="module")
def unit(reference_dir):
    return load_file(str(reference_dir / "unit_plain_forward.safetensors"))


def _outputs(parts: dict, unit: dict) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {
            "reference_unet": parts["reference_unet"](unit["ref_latent"], 0, unit["clip_embeds"]),
            "denoising_unet": parts["denoising_unet"](unit["denoising_input"], unit["timestep"][0],
                                                      unit["clip_embeds"], unit["pose_cond_fea"]),
            "pose_guider": parts["pose_guider"](unit["denoising_input"][:, :3].sigmoid()),
        }


def _copy_fixture(reference_dir: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    (dst / "weights").mkdir(parents=True)
    shutil.copytree(reference_dir / "configs", dst / "configs")
    for name in ("reference_unet", "denoising_unet", "pose_guider"):
        if name not in skip:
            shutil.copy(reference_dir / "weights" / f"{name}.safetensors", dst / "weights")
    return dst


def test_official_key_names_and_shapes_are_accepted(components, reference_dir):
    for name, cls in CLASSES.items():
        official = load_file(str(reference_dir / "weights" / f"{name}.safetensors"))
        ours = components[name].state_dict()
        assert isinstance(components[name], cls)
        assert set(ours) == set(official), name
        for key, value in official.items():
            assert torch.equal(ours[key], value), f"{name}.{key} not loaded as stored"
    assert {"vae", "image_encoder"} <= set(components)


def test_missing_key_is_named(reference_dir, tmp_path):
    folder = _copy_fixture(reference_dir, tmp_path / "rel", skip=("denoising_unet",))
    state = load_file(str(reference_dir / "weights" / "denoising_unet.safetensors"))
    victim = sorted(k for k in state if ".motion_modules." in k and k.endswith("to_q.weight"))[0]
    del state[victim]
    save_file(state, str(folder / "weights" / "denoising_unet.safetensors"))
    with pytest.raises(WeightsError, match="missing key") as err:
        load_official_components(folder)
    assert victim in str(err.value)


def test_renamed_key_is_named_both_ways(reference_dir, tmp_path):
    folder = _copy_fixture(reference_dir, tmp_path / "rel", skip=("pose_guider",))
    state = load_file(str(reference_dir / "weights" / "pose_guider.safetensors"))
    state["conv_in.kernel"] = state.pop("conv_in.weight")
    save_file(state, str(folder / "weights" / "pose_guider.safetensors"))
    with pytest.raises(WeightsError) as err:
        load_official_components(folder)
    assert "conv_in.weight" in str(err.value) and "conv_in.kernel" in str(err.value)


def test_shape_mismatch_names_key_and_both_shapes(reference_dir, tmp_path):
    folder = _copy_fixture(reference_dir, tmp_path / "rel", skip=("reference_unet",))
    state = load_file(str(reference_dir / "weights" / "reference_unet.safetensors"))
    original = tuple(state["conv_in.weight"].shape)
    bad = (original[0], original[1] + 1, *original[2:])
    state["conv_in.weight"] = torch.zeros(bad)
    save_file(state, str(folder / "weights" / "reference_unet.safetensors"))
    with pytest.raises(WeightsError) as err:
        load_official_components(folder)
    message = str(err.value)
    assert "conv_in.weight" in message and str(bad) in message and str(original) in message


def test_missing_component_file_is_an_error(reference_dir, tmp_path):
    folder = _copy_fixture(reference_dir, tmp_path / "rel", skip=("pose_guider",))
    with pytest.raises(WeightsError, match="pose_guider"):
        load_official_components(folder)


def test_release_layout_pth_with_separate_motion_module(reference_dir, tmp_path, components, unit):
    """Flat folder of torch files ('module.' prefixes, motion module split out), as trainers save them."""
    folder = tmp_path / "release"
    folder.mkdir()
    shutil.copytree(reference_dir / "configs", folder / "configs")
    for name in ("reference_unet", "pose_guider"):
        state = load_file(str(reference_dir / "weights" / f"{name}.safetensors"))
        torch.save({"module." + k: v for k, v in state.items()}, folder / f"{name}.pth")
    state = load_file(str(reference_dir / "weights" / "denoising_unet.safetensors"))
    motion = {k: v for k, v in state.items() if ".motion_modules." in k and not k.endswith(".pe")}
    torch.save({k: v for k, v in state.items() if k not in motion}, folder / "denoising_unet.pth")
    torch.save(motion, folder / "motion_module.pth")  # pe buffers dropped: rebuilt deterministically

    loaded = load_official_components(folder)
    assert set(loaded) == {"reference_unet", "denoising_unet", "pose_guider"}
    ours, expected = _outputs(loaded, unit), _outputs(components, unit)
    for name in ours:
        torch.testing.assert_close(ours[name], expected[name], atol=1e-6, rtol=0)


def test_save_load_round_trip(components, unit, tmp_path):
    expected = _outputs(components, unit)
    reloaded = {}
    for name, cls in CLASSES.items():
        components[name].save_pretrained(str(tmp_path / name))
        assert (tmp_path / name / "diffusion_pytorch_model.safetensors").is_file()
        reloaded[name] = cls.from_pretrained(str(tmp_path / name)).eval()
    ours = _outputs(reloaded, unit)
    for name in ours:
        assert torch.equal(ours[name], expected[name]), name


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("anycharv")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "anycharv.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, timeout=300)


def test_convert_official_cli_round_trip(reference_dir, tmp_path, components, unit):
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionModelWithProjection

    dst = tmp_path / "converted"
    result = _cli("convert-official", str(reference_dir), str(dst))
    assert result.returncode == 0, result.stderr
    for name in ("reference_unet", "denoising_unet", "pose_guider", "vae"):
        assert (dst / name / "config.json").is_file()
        assert (dst / name / "diffusion_pytorch_model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left behind"

    loaded = {name: cls.from_pretrained(str(dst / name)).eval() for name, cls in CLASSES.items()}
    ours, expected = _outputs(loaded, unit), _outputs(components, unit)
    for name in ours:
        assert torch.equal(ours[name], expected[name]), name

    vae = AutoencoderKL.from_pretrained(str(dst / "vae")).eval()
    encoder = CLIPVisionModelWithProjection.from_pretrained(str(dst / "image_encoder")).eval()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pixels = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(vae.encode(image).latent_dist.mean, components["vae"].encode(image).latent_dist.mean)
        assert torch.equal(encoder(pixels).image_embeds, components["image_encoder"](pixels).image_embeds)

    again = _cli("convert-official", str(reference_dir), str(dst))
    assert again.returncode == 1 and "already exists" in again.stderr


def test_build_and_load_keeps_the_checkpoint_tensors_instead_of_a_second_copy():
    """Meta-device build: the module's weights are the checkpoint's own (aligned) tensors, misaligned or
    other-dtype ones are copied, a left-out position table is rebuilt, anything else left out is an error."""
    from anycharv.model.motion_module import PositionEncoding, sinusoidal_table
    from anycharv.model.official import build_and_load

    def factory():
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
        model.pos = PositionEncoding(8, max_len=6)
        return model

    source = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    weight = source[0].weight.detach().clone()
    misaligned = torch.empty(2 * 8 + 2)[2:].view(2, 8).copy_(source[1].weight.detach())  # 8 bytes off
    state = {"0.weight": weight, "0.bias": source[0].bias.detach().double(), "1.weight": misaligned,
             "1.bias": source[1].bias.detach().clone()}
    optional = lambda key: key.endswith(".pe")  # noqa: E731
    loaded = build_and_load(factory, dict(state), "test", optional=optional)
    assert loaded[0].weight.data_ptr() == weight.data_ptr()  # no copy
    assert loaded[0].bias.dtype == torch.float32 and torch.equal(loaded[0].bias, source[0].bias.float())
    assert loaded[1].weight.data_ptr() % 64 == 0 and torch.equal(loaded[1].weight, misaligned)
    assert torch.equal(loaded.pos.pe, sinusoidal_table(6, 8))  # not in the checkpoint: rebuilt
    assert all(not t.is_meta for t in loaded.state_dict().values())
    x = torch.randn(3, 4)
    torch.testing.assert_close(loaded[1](loaded[0](x)), source(x).detach(), rtol=0, atol=0)

    def with_buffer():
        model = factory()
        model.register_buffer("scale", torch.ones(3), persistent=False)
        return model

    with pytest.raises(WeightsError, match="no values for scale"):
        build_and_load(with_buffer, dict(state), "test", optional=optional)
