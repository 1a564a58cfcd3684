"""anycharv.model: networks, loaders and the inference pipeline.

Public names are resolved lazily (PEP 562), so ``import anycharv.model`` stays cheap and does not
import torch/diffusers until one of them is used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AnyCharVPipeline": "anycharv.model.pipeline",
    "InferenceOptions": "anycharv.model.pipeline",
    "PARITY_OPTIONS": "anycharv.model.pipeline",
    "DEFAULT_OPTIONS": "anycharv.model.pipeline",
    "AnyCharVPipelineOutput": "anycharv.model.pipeline_output",
    "make_scheduler": "anycharv.model.scheduling",
    "PoseGuider": "anycharv.model.pose_guider",
    "ReferenceUNet2D": "anycharv.model.reference_unet",
    "DenoisingUNet3D": "anycharv.model.denoising_unet",
    "ReferenceAttentionControl": "anycharv.model.reference_attention",
    "load_official_components": "anycharv.model.official",
    "build_tiny_components": "anycharv.model.tiny",
    "build_sd15_components": "anycharv.model.sd15",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'anycharv.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
