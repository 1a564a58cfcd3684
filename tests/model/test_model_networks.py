"""Behaviour of the networks and the reference mechanism on tiny random components (no fixture needed)."""

from __future__ import annotations

import pytest
import torch

from anycharv.errors import ConfigError
from anycharv.model.denoising_unet import DenoisingUNet3D
from anycharv.model.reference_attention import ReferenceAttentionControl
from anycharv.model.tiny import TINY_DENOISING_UNET, build_tiny_components


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_components(seed=3, with_vae=False, with_image_encoder=False)


def _inputs(batch=1, frames=4, h=12, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "ref": torch.randn(batch, 4, h, w, generator=g),
        "sample": torch.randn(batch, 9, frames, h, w, generator=g),
        "context": torch.randn(batch, 1, 32, generator=g),
        "pose": torch.rand(batch, 3, frames, h * 8, w * 8, generator=g),
    }


def _plain(tiny, x, context):
    with torch.no_grad():
        return tiny["denoising_unet"](x["sample"], 500, context, tiny["pose_guider"](x["pose"]))


def _with_reference(tiny, x, ref_context, context, cfg, **kwargs):
    control = ReferenceAttentionControl(tiny["reference_unet"], tiny["denoising_unet"], cfg, **kwargs)
    try:
        with torch.no_grad():
            tiny["reference_unet"](x["ref"], 0, ref_context)
            control.update()
            return tiny["denoising_unet"](x["sample"], 500, context, tiny["pose_guider"](x["pose"])), control.banks()
    finally:
        control.remove()


def test_tiny_components_are_seeded_and_non_trivial():
    a = build_tiny_components(seed=0, with_vae=False, with_image_encoder=False)
    b = build_tiny_components(seed=0, with_vae=False, with_image_encoder=False)
    c = build_tiny_components(seed=1, with_vae=False, with_image_encoder=False)
    for name in a:
        sa, sb, sc = a[name].state_dict(), b[name].state_dict(), c[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    proj_out = a["denoising_unet"].down_blocks[0].motion_modules[0].temporal_transformer.proj_out.weight
    assert proj_out.abs().sum() > 0 and a["pose_guider"].conv_out.weight.abs().sum() > 0


def test_tiny_matches_fixture_architecture(tiny, reference_dir):
    """Same parameter names and shapes as the golden set whose architecture tiny mirrors."""
    import json

    from safetensors import safe_open

    from anycharv.model import official_configs as oc

    def norm(value):
        return list(value) if isinstance(value, (list, tuple)) else value

    entry = json.loads((reference_dir / "configs" / "denoising_unet.json").read_text())
    theirs = oc.denoising_unet_config(oc.model_kwargs(entry))
    if any(norm(v) != norm(theirs.get(k, v)) for k, v in TINY_DENOISING_UNET.items()):
        pytest.skip("this fixture set uses another architecture than the tiny preset")
    for name in ("reference_unet", "denoising_unet", "pose_guider"):
        with safe_open(str(reference_dir / "weights" / f"{name}.safetensors"), "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        assert {k: tuple(v.shape) for k, v in tiny[name].state_dict().items()} == shapes, name


def test_output_shapes_and_odd_latent_sizes(tiny):
    for h, w, frames in ((12, 8, 4), (10, 6, 3), (7, 5, 1)):
        x = _inputs(batch=2, frames=frames, h=h, w=w)
        pose = tiny["pose_guider"](x["pose"])
        assert pose.shape == (2, 32, frames, h, w)
        out = _plain(tiny, x, x["context"])
        assert out.shape == (2, 4, frames, h, w) and torch.isfinite(out).all()
        assert tiny["reference_unet"](x["ref"], 0, x["context"]).shape == (2, 32, h, w)


def test_frames_are_independent_only_through_motion_modules(tiny):
    """Changing one frame changes the others (temporal attention), and batches stay separate."""
    x = _inputs(batch=2, frames=4)
    base = _plain(tiny, x, x["context"])
    x["sample"] = x["sample"].clone()
    x["sample"][0, :, 0] += 1.0
    changed = _plain(tiny, x, x["context"])
    assert (changed[0, :, 3] - base[0, :, 3]).abs().max() > 1e-4
    assert torch.equal(changed[1], base[1])


def test_cfg_reader_halves(tiny):
    """Uncond half == plain forward with zero context; cond half == the no-CFG reader."""
    x = _inputs(batch=1)
    context2 = torch.cat([torch.zeros_like(x["context"]), x["context"]])
    x2 = {k: torch.cat([v, v]) for k, v in x.items()}
    out_cfg, banks = _with_reference(tiny, x2, context2, context2, cfg=True)
    out_nocfg, _ = _with_reference(tiny, x, x["context"], x["context"], cfg=False)
    plain_zero = _plain(tiny, x, torch.zeros_like(x["context"]))
    torch.testing.assert_close(out_cfg[:1], plain_zero, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_cfg[1:], out_nocfg, atol=1e-5, rtol=0)
    assert (out_nocfg - _plain(tiny, x, x["context"])).abs().max() > 1e-4  # the reference does matter
    assert all(bank.dtype == torch.float16 and bank.shape[0] == 2 for _, _, bank in banks)


def test_bank_dtype_none_keeps_fp32_and_differs_from_fp16_bank(tiny):
    x = _inputs()
    out16, banks16 = _with_reference(tiny, x, x["context"], x["context"], cfg=False)
    out32, banks32 = _with_reference(tiny, x, x["context"], x["context"], cfg=False, bank_dtype=None)
    assert all(b.dtype == torch.float32 for _, _, b in banks32)
    assert banks16 and [(r, w) for r, w, _ in banks16] == [(r, w) for r, w, _ in banks32]
    assert not torch.equal(out16, out32)


def test_clear_and_remove_restore_plain_behaviour(tiny):
    x = _inputs()
    plain = _plain(tiny, x, x["context"])
    control = ReferenceAttentionControl(tiny["reference_unet"], tiny["denoising_unet"], False)
    with torch.no_grad():
        tiny["reference_unet"](x["ref"], 0, x["context"])
        control.update()
        referenced = _plain(tiny, x, x["context"])
        control.clear()
        assert all(bank is None for _, _, bank in control.banks())
        cleared = _plain(tiny, x, x["context"])
    with pytest.raises(ValueError, match="already installed"):
        ReferenceAttentionControl(tiny["reference_unet"], tiny["denoising_unet"], True)
    control.remove()
    after_remove = _plain(tiny, x, x["context"])
    assert (referenced - plain).abs().max() > 1e-4
    torch.testing.assert_close(cleared, plain, atol=1e-6, rtol=0)
    assert torch.equal(after_remove, plain)


def test_reference_gradients_reach_the_reference_unet(tiny):
    """Training needs d(loss)/d(ReferenceNet) through the bank (no detach in the writer)."""
    x = _inputs(frames=2)
    control = ReferenceAttentionControl(tiny["reference_unet"], tiny["denoising_unet"], False, bank_dtype=None)
    try:
        tiny["reference_unet"].zero_grad()
        tiny["reference_unet"](x["ref"], 0, x["context"])
        control.update()
        out = tiny["denoising_unet"](x["sample"], 500, x["context"], tiny["pose_guider"](x["pose"]))
        out.square().mean().backward()
        grad = tiny["reference_unet"].down_blocks[0].attentions[0].transformer_blocks[0].norm1.weight.grad
        assert grad is not None and grad.abs().sum() > 0
    finally:
        control.remove()
        for name in ("reference_unet", "denoising_unet", "pose_guider"):
            tiny[name].zero_grad(set_to_none=True)


def test_gradient_checkpointing_gives_the_same_loss_and_grads():
    torch.manual_seed(0)
    model = DenoisingUNet3D(**TINY_DENOISING_UNET)
    x = _inputs(frames=2, h=8, w=8)
    results = []
    for checkpointing in (False, True):
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.zero_grad(set_to_none=True)
        loss = model(x["sample"], 10, x["context"]).square().mean()
        loss.backward()
        results.append((loss.detach(), model.conv_in.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-6, rtol=1e-5)


def test_bad_configs_name_the_key():
    with pytest.raises(ConfigError, match="num_attention_heads"):
        DenoisingUNet3D(**{**TINY_DENOISING_UNET, "num_attention_heads": 5})
    with pytest.raises(ConfigError, match="motion_attention_block_types"):
        DenoisingUNet3D(**{**TINY_DENOISING_UNET, "motion_attention_block_types": ("Temporal_Cross",)})
