"""A check a person can play: the original clip (its cached latents decoded), the generated one and
the reference character side by side, at the clip's frame rate, plus a PNG of its middle frame (what the
Prefect artifact shows). The generated panel must show the reference's character in the original's
pose and scene; anything else means the pairs are wrong."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from anycharv.atomic import atomic_write_bytes
from anycharv.datasets.codec import encode_png
from anycharv.model.video_writer import write_video


def side_by_side(original: np.ndarray, generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(F,H,W,3) x2 and (H,W,3) uint8 -> (F,H,3W,3): original | generated | reference."""
    still = np.broadcast_to(reference[None], generated.shape)
    return np.concatenate([original, generated, still], axis=2)


def write_preview(path: str | os.PathLike, original: np.ndarray, generated: np.ndarray, reference: np.ndarray,
                  fps: float) -> Path:
    """``path`` (.mp4) and the same name with .png (the middle frame); returns the mp4's path."""
    frames = np.ascontiguousarray(side_by_side(original, generated, reference))
    path = Path(path)
    atomic_write_bytes(path.with_suffix(".png"), encode_png(frames[len(frames) // 2]))
    return write_video(path, frames, fps)
