"""Translate official (Moore-AnimateAnyone / AnyCharV) and diffusers UNet configs to ours.

Only settings our classes implement are accepted: a key that would change the numbers and that we
do not support raises ``ConfigError`` naming it, instead of being silently dropped.
"""

from __future__ import annotations

from typing import Any

from anycharv.errors import ConfigError

# keys copied as they are (ours share the official meaning)
_COMMON = ("block_out_channels", "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn",
           "norm_num_groups", "norm_eps", "cross_attention_dim", "use_linear_projection", "flip_sin_to_cos",
           "freq_shift", "down_block_types", "up_block_types", "mid_block_type")

# keys that must keep their default value (anything else would need code we do not have)
_REQUIRED = {
    "center_input_sample": False, "only_cross_attention": False, "dual_cross_attention": False,
    "upcast_attention": False, "class_embed_type": None, "num_class_embeds": None,
    "resnet_time_scale_shift": "default", "transformer_layers_per_block": 1,
    "reverse_transformer_layers_per_block": None, "encoder_hid_dim": None, "encoder_hid_dim_type": None,
    "addition_embed_type": None, "addition_time_embed_dim": None, "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0, "time_embedding_type": "positional", "time_embedding_dim": None,
    "time_embedding_act_fn": None, "timestep_post_act": None, "time_cond_proj_dim": None, "conv_in_kernel": 3,
    "projection_class_embeddings_input_dim": None, "attention_type": "default", "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None, "cross_attention_norm": None, "dropout": 0.0,
    "use_inflated_groupnorm": True, "unet_use_cross_frame_attention": None, "unet_use_temporal_attention": None,
    "motion_module_type": "Vanilla",
}
# keys without effect on our networks
_IGNORED = {"sample_size", "conv_out_kernel", "addition_embed_type_num_heads", "_class_name",
            "_diffusers_version", "_name_or_path", "attention_head_dim", "num_attention_heads", "in_channels",
            "out_channels", "use_motion_module", "motion_module_resolutions", "motion_module_mid_block",
            "motion_module_decoder_only", "motion_module_kwargs"}
_MOTION = {"num_attention_heads": "motion_num_attention_heads",
           "num_transformer_block": "motion_num_transformer_block",
           "attention_block_types": "motion_attention_block_types",
           "temporal_position_encoding": "motion_temporal_position_encoding",
           "temporal_position_encoding_max_len": "motion_temporal_position_encoding_max_len",
           "temporal_attention_dim_div": "motion_temporal_attention_dim_div"}
_MOTION_REQUIRED = {"cross_frame_attention_mode": None, "zero_initialize": True}


def _check(config: dict[str, Any], source: str) -> None:
    for key, value in config.items():
        if key in _COMMON or key in _IGNORED:
            continue
        if key not in _REQUIRED:
            raise ConfigError(f"{source}: unsupported config key {key!r}")
        expected = _REQUIRED[key]
        falsy_ok = expected in (None, False) and value in (None, False)  # None and False mean "off"
        if value != expected and not falsy_ok:
            raise ConfigError(f"{source}: {key}={value!r} is not supported (expected {expected!r})")


def _heads(config: dict[str, Any]):
    # official/diffusers quirk: `attention_head_dim` is the number of heads when num_attention_heads is unset
    heads = config.get("num_attention_heads") or config.get("attention_head_dim", 8)
    return list(heads) if isinstance(heads, (list, tuple)) else int(heads)


def _base(config: dict[str, Any], source: str) -> dict[str, Any]:
    _check(config, source)
    ours = {key: config[key] for key in _COMMON if key in config}
    ours["num_attention_heads"] = _heads(config)
    for key in ("block_out_channels", "down_block_types", "up_block_types"):
        if key in ours:
            ours[key] = list(ours[key])
    return ours


def reference_unet_config(config: dict[str, Any], source: str = "reference_unet config") -> dict[str, Any]:
    """Official/diffusers UNet2DConditionModel config -> ``ReferenceUNet2D`` kwargs."""
    ours = _base(config, source)
    ours["in_channels"] = config.get("in_channels", 4)
    return ours


def to_3d_block(name: str) -> str:
    return name.replace("2D", "3D") if name else name


def denoising_unet_config(config: dict[str, Any], source: str = "denoising_unet config",
                          in_channels: int | None = None) -> dict[str, Any]:
    """Official UNet3DConditionModel (or a 2D SD config, blocks inflated) -> ``DenoisingUNet3D`` kwargs."""
    ours = _base(config, source)
    for key in ("down_block_types", "up_block_types"):
        if key in ours:
            ours[key] = [to_3d_block(name) for name in ours[key]]
    if ours.get("mid_block_type"):
        ours["mid_block_type"] = to_3d_block(ours["mid_block_type"])
    ours["in_channels"] = in_channels if in_channels is not None else config.get("in_channels", 9)
    ours["out_channels"] = config.get("out_channels", 4)
    for key in ("use_motion_module", "motion_module_mid_block", "motion_module_decoder_only"):
        if key in config:
            ours[key] = bool(config[key])
    if "motion_module_resolutions" in config:
        ours["motion_module_resolutions"] = list(config["motion_module_resolutions"])
    for key, value in (config.get("motion_module_kwargs") or {}).items():
        if key in _MOTION:
            ours[_MOTION[key]] = list(value) if isinstance(value, (list, tuple)) else value
        elif key in _MOTION_REQUIRED:
            if value != _MOTION_REQUIRED[key]:
                raise ConfigError(f"{source}: motion_module_kwargs.{key}={value!r} is not supported")
        else:
            raise ConfigError(f"{source}: unsupported motion_module_kwargs key {key!r}")
    return ours


def pose_guider_config(config: dict[str, Any], source: str = "pose_guider config") -> dict[str, Any]:
    allowed = {"conditioning_embedding_channels", "conditioning_channels", "block_out_channels"}
    unknown = set(config) - allowed - {"_class_name", "_diffusers_version"}
    if unknown:
        raise ConfigError(f"{source}: unsupported config key(s) {sorted(unknown)}")
    ours = {key: config[key] for key in allowed if key in config}
    if "block_out_channels" in ours:
        ours["block_out_channels"] = list(ours["block_out_channels"])
    return ours


def model_kwargs(entry: dict[str, Any]) -> dict[str, Any]:
    """The fixture's per-model JSON: prefer the full ``resolved_config``, else ``constructor_kwargs``."""
    return dict(entry.get("resolved_config") or entry.get("constructor_kwargs") or entry)


# Released AnyCharV = SD-1.5 / sd-image-variations UNet + Moore-AnimateAnyone inference_v2 kwargs.
RELEASE_UNET_2D = {
    "in_channels": 4, "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32, "norm_eps": 1e-5,
    "flip_sin_to_cos": True, "freq_shift": 0, "act_fn": "silu", "downsample_padding": 1,
    "mid_block_scale_factor": 1, "use_linear_projection": False,
}
RELEASE_MOTION = {
    "use_motion_module": True, "motion_module_resolutions": [1, 2, 4, 8], "motion_module_mid_block": True,
    "motion_module_decoder_only": False, "motion_module_type": "Vanilla", "use_inflated_groupnorm": True,
    "unet_use_cross_frame_attention": False, "unet_use_temporal_attention": False,
    "motion_module_kwargs": {"num_attention_heads": 8, "num_transformer_block": 1,
                             "attention_block_types": ["Temporal_Self", "Temporal_Self"],
                             "temporal_position_encoding": True, "temporal_position_encoding_max_len": 32,
                             "temporal_attention_dim_div": 1},
}
RELEASE_POSE_GUIDER = {"conditioning_embedding_channels": 320, "conditioning_channels": 3,
                       "block_out_channels": [16, 32, 96, 256]}
