"""Training starts: both UNets from SD-1.5 / sd-image-variations UNet2D weights, motion modules from
AnimateDiff (``mm_sd_v15*.ckpt/.safetensors`` or a diffusers ``MotionAdapter`` folder).

The denoising UNet's ``conv_in`` is widened from 4 to 9 input channels; the new channels (target
latent, mask) start at zero, so at step 0 the network ignores them and behaves like the SD UNet on
the noisy latent. Motion modules that are not loaded start as the identity (zero ``proj_out``).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from anycharv.errors import WeightsError
from anycharv.model import official_configs as oc
from anycharv.model.denoising_unet import DenoisingUNet3D
from anycharv.model.official import load_checked, read_state_dict, short_keys
from anycharv.model.reference_unet import ReferenceUNet2D

logger = logging.getLogger(__name__)

_DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_MOTION_KEY = re.compile(r"(^|\.)motion_modules\.")
_UNET_HEAD = re.compile(r"^(conv_norm_out|conv_out)\.")


def _folder_weights(folder: Path) -> Path:
    for name in _DIFFUSERS_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    raise WeightsError(f"{folder}: no {' or '.join(_DIFFUSERS_WEIGHTS)}")


def load_unet2d(src: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(diffusers UNet2DConditionModel config, state dict in diffusers naming) from a diffusers folder
    (the model folder or a pipeline folder with ``unet/``) or a single diffusers-named weights file
    (the SD-1.5 config is then assumed)."""
    path = Path(src).expanduser()
    if path.is_dir():
        if (path / "unet" / "config.json").is_file():
            path = path / "unet"
        config_path = path / "config.json"
        if not config_path.is_file():
            raise WeightsError(f"{path}: no config.json (expected a diffusers UNet2DConditionModel folder)")
        config = json.loads(config_path.read_text())
        state = read_state_dict(_folder_weights(path))
    elif path.is_file():
        config, state = dict(oc.RELEASE_UNET_2D), read_state_dict(path)
    else:
        raise WeightsError(f"{src}: no such UNet folder or file")
    if any(k.startswith("model.diffusion_model.") for k in state):
        raise WeightsError(f"{src}: original LDM/CompVis key naming; convert it to a diffusers UNet folder first")
    return config, state


def _adapter_to_animatediff(key: str) -> list[str]:
    """diffusers MotionAdapter name -> AnimateDiff/official name(s) (the shared pe goes to both blocks)."""
    head, _, tail = key.partition(".motion_modules.")
    index, _, rest = tail.partition(".")
    prefix = f"{head}.motion_modules.{index}.temporal_transformer."
    match = re.match(r"transformer_blocks\.(\d+)\.(.*)$", rest)
    if not match:
        return [prefix + rest]  # norm / proj_in / proj_out
    block, inner = match.groups()
    base = f"{prefix}transformer_blocks.{block}."
    if inner == "pos_embed.pe":
        return [f"{base}attention_blocks.0.pos_encoder.pe", f"{base}attention_blocks.1.pos_encoder.pe"]
    for ours, theirs in (("attn1.", "attention_blocks.0."), ("attn2.", "attention_blocks.1."),
                         ("norm1.", "norms.0."), ("norm2.", "norms.1."), ("norm3.", "ff_norm.")):
        if inner.startswith(ours):
            return [base + theirs + inner[len(ours):]]
    return [base + inner]


def load_motion_module(src: str | Path) -> dict[str, torch.Tensor]:
    """AnimateDiff motion-module weights in official naming, from ``mm_sd_v15*`` files (torch files
    via ``weights_only=True``) or a diffusers ``MotionAdapter`` folder/file."""
    path = Path(src).expanduser()
    state = read_state_dict(_folder_weights(path) if path.is_dir() else path)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    foreign = sorted(k for k in state if not _MOTION_KEY.search(k))
    if foreign:
        raise WeightsError(f"{src}: not motion-module weights (unexpected key(s): {short_keys(foreign)})")
    if any(".temporal_transformer." in k for k in state):
        return state
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for i, name in enumerate(_adapter_to_animatediff(key)):
            converted[name] = value if i == 0 else value.clone()  # no shared storage (safetensors refuses it)
    return converted


def widen_conv_in(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(C, k, 3, 3) -> (C, in_channels, 3, 3); the added input channels are zero."""
    if weight.shape[1] > in_channels:
        raise WeightsError(f"conv_in.weight: {weight.shape[1]} input channels cannot shrink to {in_channels}")
    wide = weight.new_zeros((weight.shape[0], in_channels, *weight.shape[2:]))
    wide[:, : weight.shape[1]] = weight
    return wide


def reference_unet_from_unet2d(src: str | Path) -> ReferenceUNet2D:
    """ReferenceNet from SD UNet weights (its output head is dropped: the ReferenceNet has none)."""
    config, state = load_unet2d(src)
    model = ReferenceUNet2D(**oc.reference_unet_config(config, f"{src} config"))
    load_checked(model, state, str(src), ignorable=lambda k: bool(_UNET_HEAD.match(k)))
    return model


def denoising_unet_from_unet2d(src: str | Path, motion_module: str | Path | None = None, in_channels: int = 9,
                               motion_config: dict[str, Any] | None = None) -> DenoisingUNet3D:
    """Denoising UNet from SD UNet weights, ``conv_in`` widened to ``in_channels``, plus AnimateDiff
    motion modules (all of the network's motion modules must be in the file) or fresh identity ones.
    ``motion_config`` overrides the official motion kwargs (``RELEASE_MOTION`` layout)."""
    config, state = load_unet2d(src)
    motion = dict(oc.RELEASE_MOTION)
    motion.update(motion_config or {})
    mm_state = load_motion_module(motion_module) if motion_module is not None else {}
    pe = next((v for k, v in mm_state.items() if k.endswith("pos_encoder.pe")), None)
    if pe is not None and not (motion_config and "motion_module_kwargs" in motion_config):
        # the table length is part of the checkpoint (24 in mm_sd_v15, 32 in v2): follow it
        motion["motion_module_kwargs"] = {**motion["motion_module_kwargs"],
                                          "temporal_position_encoding_max_len": pe.shape[1]}
    model = DenoisingUNet3D(**oc.denoising_unet_config({**config, **motion}, f"{src} config",
                                                       in_channels=in_channels))
    state = dict(state)
    if "conv_in.weight" in state:
        state["conv_in.weight"] = widen_conv_in(state["conv_in.weight"], in_channels)
    overlap = sorted(set(state) & set(mm_state))
    if overlap:
        raise WeightsError(f"{motion_module}: keys also in the UNet weights: {short_keys(overlap)}")
    motion_keys = {k for k in model.state_dict() if _MOTION_KEY.search(k)}
    if mm_state:
        missing = sorted(motion_keys - set(mm_state))
        if missing:
            raise WeightsError(f"{motion_module}: missing motion-module key(s): {short_keys(missing)}")
        state.update(mm_state)
    fresh = motion_keys if not mm_state else set()
    load_checked(model, state, str(src), optional=lambda k: k in fresh)
    return model
