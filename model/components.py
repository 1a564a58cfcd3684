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


def _load_component_folders(root: Path, vae: str | None, image_encoder: str | None) -> dict[str, Any]:
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionModelWithProjection

    from anycharv.errors import WeightsError
    from anycharv.model.denoising_unet import DenoisingUNet3D
    from anycharv.model.pose_guider import PoseGuider
    from anycharv.model.reference_unet import ReferenceUNet2D

    loaders = {"reference_unet": ReferenceUNet2D, "denoising_unet": DenoisingUNet3D, "pose_guider": PoseGuider,
               "vae": AutoencoderKL, "image_encoder": CLIPVisionModelWithProjection}
    paths = {name: root / name for name in loaders}
    if vae:
        paths["vae"] = Path(vae)
    if image_encoder:
        paths["image_encoder"] = Path(image_encoder)
    components = {}
    for name, cls in loaders.items():
        path = paths[name]
        if name in ("vae", "image_encoder") and not (path / "config.json").is_file():
            continue
        try:
            components[name] = cls.from_pretrained(str(path)).eval()
        except Exception as exc:
            raise WeightsError(f"{path}: cannot load {cls.__name__} ({exc})") from exc
    return components


def build_pipeline(components: dict[str, Any], *, device=None, dtype=None, parity: bool = False):
    """An ``AnyCharVPipeline`` on ``device`` with the networks in ``dtype`` (latents stay float32)."""
    import torch

    from anycharv.model.pipeline import AnyCharVPipeline

    for module in components.values():
        if not isinstance(module, torch.nn.Module):
            continue
        current = next(module.parameters()).dtype
        # ModelMixin.to(dtype=...) logs a warning even when nothing changes: only cast when needed.
        module.to(device=device, dtype=dtype if dtype is not None and dtype != current else None)
    return AnyCharVPipeline.from_components(components, parity=parity)
