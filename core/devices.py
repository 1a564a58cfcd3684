"""Device and dtype choice per call: never a hard-coded ``cuda``."""

from __future__ import annotations

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` wins ("cpu", "cuda:1", "mps"); otherwise the best available accelerator."""
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, requested: str | None = None) -> torch.dtype:
    """fp32 on CPU; bf16 on accelerators that support it, else fp16; ``requested`` wins."""
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if requested and requested != "auto":
        if requested not in names:
            raise ValueError(f"dtype {requested!r}: expected one of {sorted(names)} or 'auto'")
        return names[requested]
    if device.type == "cpu":
        return torch.float32
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16
