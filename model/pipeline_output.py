"""Return type of ``AnyCharVPipeline``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffusers.utils import BaseOutput

__all__ = ["AnyCharVPipelineOutput"]


@dataclass
class AnyCharVPipelineOutput(BaseOutput):
    """``frames`` by ``output_type``: "np" float32 (1,F,H,W,3) in [0,1]; "uint8" uint8 (1,F,H,W,3);
    "pt" float32 tensor (1,F,3,H,W) in [0,1]; "pil" [[PIL.Image] * F]; "latent" tensor (1,4,F,H/8,W/8)."""

    frames: Any
