"""Write uint8 frames to an mp4 at the source's frame rate (PyAV, H.264).

The result appears under its final name only once it is complete (``anycharv.atomic``), so a
crash never leaves a truncated video that looks finished.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from anycharv.atomic import atomic_path
from anycharv.errors import InputError

__all__ = ["write_video", "as_fraction"]


def as_fraction(fps: float | Fraction | str) -> Fraction:
    """Frame rate as an exact fraction: 29.97 -> 30000/1001, 30 -> 30/1, "60000/1001" kept exact."""
    if isinstance(fps, Fraction):
        rate = fps
    elif isinstance(fps, str):
        rate = Fraction(fps)
    else:
        rate = Fraction(float(fps)).limit_denominator(1001)
    if rate <= 0:
        raise InputError("fps", f"frame rate must be positive, got {fps}")
    return rate


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float | Fraction | str, *,
                codec: str = "libx264", crf: int = 18) -> Path:
    """Encode (F,H,W,3) uint8 RGB frames as ``path`` at ``fps``; returns the path.

    yuv420p (what every player takes) needs even sizes; odd-sized frames use yuv444p instead so the
    output keeps the source size exactly.
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise InputError("frames", f"expected uint8 (F,H,W,3) RGB frames, got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise InputError("frames", "no frames to write")
    path = Path(path)
    if path.suffix.lower() not in {".mp4", ".mov", ".mkv"}:
        raise InputError(str(path), "output must end in .mp4 (or .mov/.mkv)")
    rate = as_fraction(fps)
    height, width = frames.shape[1:3]
    with atomic_path(path, keep_suffix=True) as tmp, av.open(str(tmp), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        even = width % 2 == 0 and height % 2 == 0
        stream.pix_fmt = "yuv420p" if even else "yuv444p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            packet = stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24"))
            container.mux(packet)
        container.mux(stream.encode(None))
    return path
