"""The two UNets share one skeleton (``anycharv.model.unet_common``); the part that cannot be shared,
their explicit ``__init__`` signatures, must stay in sync by hand, and this checks it."""

from __future__ import annotations

import importlib
import inspect
import re

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.modeling_utils import ModelMixin

from anycharv.model.denoising_unet import DenoisingUNet3D
from anycharv.model.official_configs import to_3d_block
from anycharv.model.reference_unet import ReferenceUNet2D
from anycharv.model.tiny import TINY_REFERENCE_UNET
from anycharv.model.unet_common import SHARED_CONFIG_KEYS, UNetSkeleton, down_channel_plan, up_channel_plan

BLOCK_TYPE_KEYS = ("down_block_types", "mid_block_type", "up_block_types")
# shared keys whose documentation differs on purpose (what the UNet reads, its blocks, its layers)
DOCUMENTED_APART = ("in_channels", *BLOCK_TYPE_KEYS, "layers_per_block")


def _documented_args(cls) -> dict[str, str]:
    """The class docstring's ``Args:`` entries, name -> text (diffusers layout, 8-space indent)."""
    section = inspect.getdoc(cls).split("Args:\n", 1)[1]
    entries = re.split(r"^    (\w+) \(", section, flags=re.M)[1:]
    return {name: " ".join(text.split()) for name, text in zip(entries[::2], entries[1::2])}


def _parameters(cls) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self")
    return params


def test_shared_config_keys_have_the_same_order_annotation_and_default():
    ref, den = _parameters(ReferenceUNet2D), _parameters(DenoisingUNet3D)
    assert list(ref) == list(SHARED_CONFIG_KEYS)  # the ReferenceNet takes exactly the shared keys
    assert [k for k in den if k in SHARED_CONFIG_KEYS] == list(SHARED_CONFIG_KEYS)
    for key in SHARED_CONFIG_KEYS:
        assert ref[key].annotation == den[key].annotation, key
        if key == "in_channels":
            assert (ref[key].default, den[key].default) == (4, 9)  # the latent vs latent+target+mask
        elif key in BLOCK_TYPE_KEYS:
            theirs = den[key].default
            ours = ref[key].default
            mapped = to_3d_block(ours) if isinstance(ours, str) else tuple(to_3d_block(k) for k in ours)
            assert mapped == theirs, key
        else:
            assert ref[key].default == den[key].default, key


def test_every_argument_is_documented_and_shared_ones_alike():
    ref, den = _documented_args(ReferenceUNet2D), _documented_args(DenoisingUNet3D)
    assert list(ref) == list(_parameters(ReferenceUNet2D))
    assert list(den) == list(_parameters(DenoisingUNet3D))
    for key in SHARED_CONFIG_KEYS:
        if key not in DOCUMENTED_APART:
            assert ref[key] == den[key], key


def test_both_unets_are_built_on_the_skeleton_and_loadable_by_pipelines():
    assert issubclass(ReferenceUNet2D, UNetSkeleton) and issubclass(DenoisingUNet3D, UNetSkeleton)
    assert ReferenceUNet2D._supports_gradient_checkpointing and DenoisingUNet3D._supports_gradient_checkpointing
    # DiffusionPipeline.from_pretrained finds the load method through the component module's ModelMixin.
    for cls in (ReferenceUNet2D, DenoisingUNet3D):
        assert getattr(importlib.import_module(cls.__module__), "ModelMixin", None) is ModelMixin, cls


def test_channel_plans_of_sd15():
    widths = (320, 640, 1280, 1280)
    assert down_channel_plan(widths) == [(320, 320, True), (320, 640, True), (640, 1280, True), (1280, 1280, False)]
    assert up_channel_plan(widths) == [(1280, 1280, 1280, True), (640, 1280, 1280, True), (320, 1280, 640, True),
                                       (320, 640, 320, False)]


def test_reference_unet_has_diffusers_parameters_without_the_output_head():
    torch.manual_seed(0)
    ours = ReferenceUNet2D(**TINY_REFERENCE_UNET)
    # attention_head_dim: diffusers' SD-1.5 naming for the head count
    keys = ("in_channels", "down_block_types", "up_block_types", "block_out_channels", "layers_per_block",
            "norm_num_groups", "cross_attention_dim")
    theirs = UNet2DConditionModel(out_channels=4, attention_head_dim=TINY_REFERENCE_UNET["num_attention_heads"],
                                  **{k: TINY_REFERENCE_UNET[k] for k in keys})
    head = {k: v for k, v in theirs.state_dict().items() if k.startswith(("conv_norm_out.", "conv_out."))}
    assert sorted(head) == ["conv_norm_out.bias", "conv_norm_out.weight", "conv_out.bias", "conv_out.weight"]
    expected = {k: tuple(v.shape) for k, v in theirs.state_dict().items() if k not in head}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    # Same parameters, same computation: diffusers' UNet up to its head equals ours.
    ours.load_state_dict({k: v for k, v in theirs.state_dict().items() if k not in head})
    sample, context = torch.randn(2, 4, 12, 10), torch.randn(2, 1, TINY_REFERENCE_UNET["cross_attention_dim"])
    captured = {}
    hook = theirs.conv_norm_out.register_forward_pre_hook(lambda _m, args: captured.update(x=args[0]))
    try:
        with torch.no_grad():
            theirs(sample, 7, encoder_hidden_states=context)
            mine = ours(sample, 7, context)
    finally:
        hook.remove()
    torch.testing.assert_close(mine, captured["x"], rtol=1e-5, atol=1e-5)
