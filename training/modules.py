"""The three networks a stage starts from, and which of their parameters it trains.

==================  ===========================================================================
stage               trained
==================  ===========================================================================
``stage1_image``    ReferenceNet, denoising UNet without its motion modules, pose guider
``stage1_video``    the motion modules (``modules.video_trains=motion``) or all three networks
``stage2``          the denoising UNet only
==================  ===========================================================================

Everything else is frozen (``requires_grad=False``) and kept in eval mode. The VAE and CLIP are
never loaded here: training reads cached latents and embeddings.
"""

from __future__ import annotations

import logging
import re

import torch
from torch import nn

from anycharv.errors import InputError
from anycharv.training.config import InitConfig, TrainConfig

log = logging.getLogger("anycharv.training")

NETWORKS = ("reference_unet", "denoising_unet", "pose_guider")
_MOTION = re.compile(r"(^|\.)motion_modules\.")


def tiny_networks(seed: int) -> dict[str, nn.Module]:
    """The tiny architecture (``anycharv.model.tiny``) as a fresh start: seeded random weights with
    the constructors' zero inits kept (pose guider output, motion-module output), as a real start has."""
    from anycharv.model.tiny import build_tiny_components

    return build_tiny_components(seed, with_vae=False, with_image_encoder=False, keep_zero_init=True)


def sd_networks(unet2d: str, motion_module: str | None, seed: int) -> dict[str, nn.Module]:
    """Both UNets from SD-1.5-layout UNet weights (+ AnimateDiff motion modules), and a fresh pose
    guider (the release's widths) whose output width is the UNet's first width."""
    from anycharv.model.init_weights import denoising_unet_from_unet2d, reference_unet_from_unet2d
    from anycharv.model.pose_guider import PoseGuider
    from anycharv.model.sd15 import SD15_POSE_GUIDER

    torch.manual_seed(seed)
    denoising = denoising_unet_from_unet2d(unet2d, motion_module=motion_module)
    width = int(denoising.config.block_out_channels[0])
    return {"reference_unet": reference_unet_from_unet2d(unet2d), "denoising_unet": denoising,
            "pose_guider": PoseGuider(**{**SD15_POSE_GUIDER, "conditioning_embedding_channels": width})}


def load_motion_modules(unet: nn.Module, src: str) -> None:
    """Put AnimateDiff motion-module weights into ``unet`` (every motion key must be there)."""
    from anycharv.model.init_weights import load_motion_module
    from anycharv.model.official import load_checked

    state = load_motion_module(src)
    own = unet.state_dict()
    for key, value in list(state.items()):
        # the position table is the fixed sinusoid, not learned: a shorter one (24 frames in
        # mm_sd_v15, 32 in v2) is the start of the network's own, which it keeps
        mine = own.get(key)
        if key.endswith("pos_encoder.pe") and mine is not None and value.shape != mine.shape and \
                value.shape[1] < mine.shape[1] and torch.allclose(value, mine[:, : value.shape[1]], atol=1e-5):
            state[key] = mine
    full = {k: state.get(k, v) for k, v in own.items()}
    missing = sorted(k for k in own if _MOTION.search(k) and k not in state)
    if missing:
        raise InputError(f"init.motion_module {src}", f"{len(missing)} motion-module keys of the network are not in "
                         f"the file (e.g. {missing[0]})", code="bad_init")
    load_checked(unet, full, src)


def start_networks(init: InitConfig, stage: str) -> dict[str, nn.Module]:
    """The networks ``init`` names (InputError when it names none or something unloadable)."""
    if init.preset == "tiny":
        nets = tiny_networks(init.seed)
    elif init.model:
        from anycharv.model.components import load_networks
        from anycharv.training.run_layout import resolve_model_dir

        nets = load_networks(str(resolve_model_dir(init.model)))
    elif init.unet2d:
        nets = sd_networks(init.unet2d, init.motion_module, init.seed)
    else:
        raise InputError("init", "give --init MODEL_DIR (a previous stage or a release), init.unet2d=SD_UNET_DIR "
                         "or --preset tiny", code="no_init")
    if init.motion_module and not init.unet2d and stage != "stage1_image":
        load_motion_modules(nets["denoising_unet"], init.motion_module)
    return nets


def is_motion(name: str) -> bool:
    return bool(_MOTION.search(name))


def trained_filter(cfg: TrainConfig):
    """``(network, parameter name) -> trained?`` for the stage."""
    stage, video_all = cfg.stage, cfg.modules.video_trains == "all"
    if stage == "stage1_image":
        return lambda net, name: not (net == "denoising_unet" and is_motion(name))
    if stage == "stage1_video":
        return lambda net, name: video_all or (net == "denoising_unet" and is_motion(name))
    return lambda net, name: net == "denoising_unet"


def set_trainable(nets: dict[str, nn.Module], cfg: TrainConfig) -> dict[str, list[str]]:
    """Freeze what the stage does not train; returns the trained parameter names per network."""
    keep = trained_filter(cfg)
    trained: dict[str, list[str]] = {}
    for net_name, net in nets.items():
        names = []
        for name, param in net.named_parameters():
            param.requires_grad_(keep(net_name, name))
            if param.requires_grad:
                names.append(name)
        trained[net_name] = names
        net.train(bool(names))
    if not any(trained.values()):
        raise InputError(f"stage {cfg.stage}", "trains no parameter of these networks (no motion modules?)",
                         code="nothing_to_train")
    return trained


def check_context_width(nets: dict[str, nn.Module], clip_dim: int, where: str) -> None:
    """The UNets' cross-attention width must be the cache's CLIP embedding width."""
    for name in ("reference_unet", "denoising_unet"):
        width = int(nets[name].config.cross_attention_dim)
        if width != clip_dim:
            raise InputError(where, f"the cache's CLIP embeddings are {clip_dim}-d, the {name} takes {width}-d "
                             "context (another architecture; use encoders that match the model)",
                             code="architecture_mismatch")
