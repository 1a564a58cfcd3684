"""The stage-1 model a self-boost run generates with, and the VAE it decodes and re-encodes with.

Resolved and identified on the driver without loading anything (bad paths fail before Prefect or
Ray start); loaded once per worker. The identity goes into the output folder's key: weights by the
content of their files (a copied folder is the same model, a newer checkpoint is not), the tiny
preset by name and seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anycharv.errors import InputError
from anycharv.latent_cache.config import EncoderSource
from anycharv.latent_cache.identity import folder_digest
from anycharv.training.run_layout import NETWORK_NAMES, resolve_model_dir

PRESETS = ("tiny",)


@dataclass(frozen=True)
class ModelSource:
    """Either ``folder`` (the three networks' diffusers folders) or ``preset`` (random tiny networks)."""

    folder: str | None = None
    preset: str | None = None
    seed: int = 0

    @property
    def label(self) -> str:
        return self.folder or f"preset {self.preset} (seed {self.seed})"


def resolve_model(model: str | None, preset: str | None = None) -> ModelSource:
    """``model`` (a run folder, a checkpoint or an exported folder) or ``preset``; InputError naming
    the argument when neither, both, or something that is not a model is given."""
    if model and preset:
        raise InputError("--model", f"give --model or --preset, not both (got {model!r} and {preset!r})",
                         code="bad_option")
    if preset is not None:
        if preset not in PRESETS:
            raise InputError("--preset", f"unknown preset {preset!r} (available: {', '.join(PRESETS)})",
                             code="bad_preset")
        return ModelSource(preset=preset)
    if not model:
        raise InputError("--model", "give --model DIR (a training run, a checkpoint or an exported model) or "
                         "--preset tiny", code="no_model")
    try:
        return ModelSource(folder=str(resolve_model_dir(model)))
    except InputError as exc:
        raise InputError(f"--model {model}", exc.reason, code=exc.code) from exc


def model_identity(source: ModelSource) -> dict:
    if source.preset:
        return {"preset": source.preset, "seed": source.seed}
    return {"weights": folder_digest(*(Path(source.folder) / name for name in NETWORK_NAMES))}


def vae_identity(vae: str | None) -> dict | None:
    """Identity of an explicit VAE folder (None: the cache's own, already in the cache's key)."""
    if not vae:
        return None
    folder = Path(vae).expanduser()
    if not (folder / "config.json").is_file():
        raise InputError(f"--vae {vae}", "no config.json in this folder (give a diffusers AutoencoderKL folder)",
                         code="no_vae")
    return {"vae": folder_digest(folder)}


def cross_attention_dim(source: ModelSource) -> int:
    """The width of the context token the denoising UNet takes, read from its config (no loading)."""
    if source.preset:
        from anycharv.model.tiny import TINY_DENOISING_UNET

        return int(TINY_DENOISING_UNET["cross_attention_dim"])
    path = Path(source.folder) / "denoising_unet" / "config.json"
    try:
        return int(json.loads(path.read_text())["cross_attention_dim"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(str(path), f"not a readable denoising UNet config ({exc})", code="no_model") from exc


def load_networks(source: ModelSource) -> dict[str, Any]:
    """{"reference_unet", "denoising_unet", "pose_guider"} in eval mode, on the CPU."""
    if source.preset:
        from anycharv.model.tiny import build_tiny_components

        components = build_tiny_components(seed=source.seed, with_vae=False, with_image_encoder=False)
        return {name: components[name] for name in NETWORK_NAMES}
    from anycharv.model.components import load_networks as load_folder

    return load_folder(source.folder)


def load_vae(encoders: EncoderSource, vae: str | None = None):
    """The VAE the cache was encoded with (``encoders``), or the folder ``vae``; without loading the
    image encoder when the VAE has a folder of its own."""
    from anycharv.model.components import load_component, load_encoders

    explicit = vae or encoders.vae
    folder = Path(explicit).expanduser() if explicit else None
    if folder is None and encoders.weights and (Path(encoders.weights).expanduser() / "vae" / "config.json").is_file():
        folder = Path(encoders.weights).expanduser() / "vae"
    if folder is not None:
        return load_component("vae", folder)
    return load_encoders(encoders.weights, preset=encoders.preset, vae=encoders.vae,
                         image_encoder=encoders.image_encoder)["vae"]
