"""Networks for ``AnyCharVPipeline`` from wherever they come from: random tiny ones, our diffusers
component folders, or an official release (folder or hub id); and the pipeline built from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _looks_like_component_folders(root: Path) -> bool:
    return all((root / name / "config.json").is_file() for name in ("reference_unet", "denoising_unet", "pose_guider"))


def load_components(weights: str | None = None, *, preset: str | None = None, vae: str | None = None,
                    image_encoder: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Networks for the pipeline: random tiny ones (``preset="tiny"``), our diffusers component
    folders (``reference_unet/``, ``denoising_unet/``, ``pose_guider/`` [+ ``vae/``, ``image_encoder/``]),
    or an official release folder / hub id. Explicit ``vae``/``image_encoder`` paths win."""
    from anycharv.errors import InputError, WeightsError

    if preset == "tiny":
        from anycharv.model.tiny import build_tiny_components

        return build_tiny_components(seed=seed)
    if preset is not None:
        raise InputError("preset", f"unknown preset {preset!r} (available: tiny)")
    if not weights:
        raise InputError("weights", "give --weights DIR_OR_HUB_ID or --preset tiny")
    root = Path(weights).expanduser()
    if root.is_dir() and _looks_like_component_folders(root):
        components = _load_component_folders(root, vae, image_encoder)
    else:
        from anycharv.model.official import load_official_components

        components = load_official_components(weights, vae=vae, image_encoder=image_encoder)
    missing = [name for name in ("vae", "image_encoder") if name not in components]
    if missing:
        flags = " and ".join(f"--{m.replace('_', '-')}" for m in missing)
        raise WeightsError(f"{weights}: no {', '.join(missing)} found; pass {flags} (e.g. sd-vae-ft-mse and "
                           "sd-image-variations-diffusers/image_encoder folders)")
    return components


ENCODERS = ("vae", "image_encoder")
NETWORKS = ("reference_unet", "denoising_unet", "pose_guider")


def load_networks(weights: str) -> dict[str, Any]:
    """Only the three AnyCharV networks (what training and self-boost load): our component folders
    (an exported or a checkpoint's ``model/`` folder) or an official release."""
    from anycharv.errors import InputError

    root = Path(weights).expanduser()
    if root.is_dir() and _looks_like_component_folders(root):
        return {name: load_component(name, root / name) for name in NETWORKS}
    if not root.exists() and (str(weights).startswith(("/", ".", "~")) or not str(weights).count("/") == 1):
        raise InputError(str(weights), "no such model folder", code="no_model")
    from anycharv.model.official import load_official_components

    components = load_official_components(weights)
    return {name: components[name] for name in NETWORKS}


def load_encoders(weights: str | None = None, *, preset: str | None = None, vae: str | None = None,
                  image_encoder: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Only the frozen encoders {"vae", "image_encoder"}, without the UNets (what the latent cache
    needs): the tiny preset's (the same as ``load_components(preset="tiny")`` builds), explicit
    folders, ``vae/`` + ``image_encoder/`` subfolders of ``weights`` (our component folders or
    sd-image-variations-diffusers), or an official release's fixture files."""
    from anycharv.errors import InputError, WeightsError

    if preset is not None:
        components = load_components(preset=preset, seed=seed)
        return {name: components[name] for name in ENCODERS}
    found: dict[str, Any] = {}
    root = Path(weights).expanduser() if weights else None
    for name, explicit in (("vae", vae), ("image_encoder", image_encoder)):
        folder = Path(explicit).expanduser() if explicit else (root / name if root is not None else None)
        if folder is not None and (folder / "config.json").is_file():
            found[name] = load_component(name, folder)
        elif explicit:
            raise InputError(f"--{name.replace('_', '-')} {explicit}", "no config.json in this folder")
    if weights and any(name not in found for name in ENCODERS):
        from anycharv.model.official import load_official_encoders

        found = {**load_official_encoders(weights), **found}
    missing = [name for name in ENCODERS if name not in found]
    if missing:
        flags = " and ".join(f"--{m.replace('_', '-')}" for m in missing)
        raise WeightsError(f"{weights or 'no --weights'}: no {', '.join(missing)} found; pass {flags} (e.g. the "
                           "sd-vae-ft-mse and sd-image-variations-diffusers/image_encoder folders) or --preset tiny")
    return {name: found[name].eval() for name in ENCODERS}


def load_component(name: str, path: Path):
    """Component ``name`` from a diffusers/transformers folder; WeightsError naming the folder."""
    from anycharv.errors import WeightsError

    cls = _component_class(name)
    try:
        return cls.from_pretrained(str(path)).eval()
    except Exception as exc:
        raise WeightsError(f"{path}: cannot load {cls.__name__} ({exc})") from exc


def _component_class(name: str):
    if name == "vae":
        from diffusers import AutoencoderKL

        return AutoencoderKL
    if name == "image_encoder":
        from transformers import CLIPVisionModelWithProjection

        return CLIPVisionModelWithProjection
    from anycharv.model.denoising_unet import DenoisingUNet3D
    from anycharv.model.pose_guider import PoseGuider
    from anycharv.model.reference_unet import ReferenceUNet2D

    return {"reference_unet": ReferenceUNet2D, "denoising_unet": DenoisingUNet3D, "pose_guider": PoseGuider}[name]


def _load_component_folders(root: Path, vae: str | None, image_encoder: str | None) -> dict[str, Any]:
    paths = {name: root / name for name in ("reference_unet", "denoising_unet", "pose_guider", *ENCODERS)}
    if vae:
        paths["vae"] = Path(vae)
    if image_encoder:
        paths["image_encoder"] = Path(image_encoder)
    components = {}
    for name, path in paths.items():
        if name in ENCODERS and not (path / "config.json").is_file():
            continue
        components[name] = load_component(name, path)
    return components


def build_pipeline(components: dict[str, Any], *, device=None, dtype=None, parity: bool = False):
    """An ``AnyCharVPipeline`` on ``device`` with the networks in ``dtype`` (latents stay float32)."""
    import torch

    from anycharv.model.pipeline import AnyCharVPipeline

    for module in components.values():
        if not isinstance(module, torch.nn.Module):
            continue
        current = next(module.parameters()).dtype
        # ModelMixin.to(dtype=...) logs a warning even when nothing changes (dtype=None included):
        # pass only what changes.
        changes = {"device": device} if device is not None else {}
        if dtype is not None and dtype != current:
            changes["dtype"] = dtype
        if changes:
            module.to(**changes)
    return AnyCharVPipeline.from_components(components, parity=parity)
