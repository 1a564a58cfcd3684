"""Hard shot-cut detection from frame differences of small grey thumbnails.

A cut at frame ``i`` means frames ``i-1`` and ``i`` belong to different shots. A frame pair is a cut
when its mean absolute difference is above an absolute threshold *and* well above the local median
difference, so fast motion or a camera pan (uniformly high differences) is not taken for a cut.
"""

from __future__ import annotations

import numpy as np


def frame_differences(grey: np.ndarray) -> np.ndarray:
    """Mean absolute difference (0..1) between consecutive grey frames (T, h, w) -> (T-1,)."""
    if len(grey) < 2:
        return np.zeros(0, np.float32)
    g = grey.astype(np.float32)
    return (np.abs(g[1:] - g[:-1]).mean(axis=(1, 2)) / 255.0).astype(np.float32)


def detect_shot_cuts(grey: np.ndarray, threshold: float = 0.15, ratio: float = 3.0, window: int = 8) -> list[int]:
    """Indices of the first frame of every new shot (never 0)."""
    diffs = frame_differences(grey)
    cuts = []
    for k, d in enumerate(diffs):
        if d <= threshold:
            continue
        lo, hi = max(0, k - window), min(len(diffs), k + window + 1)
        neighbours = np.concatenate([diffs[lo:k], diffs[k + 1:hi]])
        local = float(np.median(neighbours)) if len(neighbours) else 0.0
        if d > ratio * local:
            cuts.append(k + 1)
    return cuts


def shot_ranges(num_frames: int, cuts: list[int]) -> list[tuple[int, int]]:
    """[start, end) frame ranges of the shots between the cuts."""
    bounds = [0] + sorted(c for c in set(cuts) if 0 < c < num_frames) + [num_frames]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def split_windows(shots: list[tuple[int, int]], clip_len: int, stride: int, min_len: int) -> list[tuple[int, int]]:
    """Fixed-length windows inside each shot; a shorter tail window is kept when >= ``min_len``."""
    out = []
    for a, b in shots:
        start = a
        while start < b:
            end = min(start + clip_len, b)
            if end - start >= min_len:
                out.append((start, end))
            if end == b:
                break
            start += stride
    return out
