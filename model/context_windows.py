"""Frame windows for long videos: the denoising UNet sees at most ``context_frames`` frames per call.

Two schedules:

* ``"official"`` reproduces the official "uniform" schedule evaluated at step 0 (it never shifts
  between steps) with a closed loop: window starts advance by ``size - overlap`` while the start is
  inside the clip and frame indices wrap modulo the clip length, so the last window mixes the end
  of the clip with its first frames (positions inside a window are always 0..size-1).
* ``"sliding"`` never wraps: windows advance by ``size - overlap`` and the last one is moved back
  so it ends on the last frame. Every frame is covered, the first and last frames are never
  treated as temporal neighbours.
"""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "context_windows", "official_windows", "sliding_windows", "coverage_counts"]

SCHEDULES = ("official", "sliding")


def _check(num_frames: int, size: int, overlap: int, stride: int = 1) -> None:
    from anycharv.errors import InputError

    if num_frames < 1:
        raise InputError("video_length", f"need at least one frame, got {num_frames}")
    if size < 1:
        raise InputError("context_frames", f"must be >= 1, got {size}")
    if not 0 <= overlap < size:
        raise InputError("context_overlap", f"must be in [0, context_frames={size}), got {overlap}")
    if stride < 1:
        raise InputError("context_stride", f"must be >= 1, got {stride}")


def official_windows(num_frames: int, size: int, overlap: int, stride: int = 1,
                     closed_loop: bool = True) -> list[list[int]]:
    """The official "uniform" schedule at step 0 (strided levels included, as the original)."""
    _check(num_frames, size, overlap, stride)
    if num_frames <= size:
        return [list(range(num_frames))]
    levels = min(stride, int(math.ceil(math.log2(num_frames / size))) + 1)
    windows: list[list[int]] = []
    for level in range(levels):
        step = 1 << level
        end = num_frames + (0 if closed_loop else -overlap)
        for start in range(0, end, size * step - overlap):
            windows.append([f % num_frames for f in range(start, start + size * step, step)])
    return windows


def sliding_windows(num_frames: int, size: int, overlap: int) -> list[list[int]]:
    """Non-wrapping windows of ``size`` frames; the last window ends exactly on the last frame."""
    _check(num_frames, size, overlap)
    if num_frames <= size:
        return [list(range(num_frames))]
    hop = size - overlap
    starts = list(range(0, num_frames - size + 1, hop))
    if starts[-1] + size < num_frames:
        starts.append(num_frames - size)
    return [list(range(s, s + size)) for s in starts]


def context_windows(schedule: str, num_frames: int, size: int, overlap: int,
                    stride: int = 1) -> list[list[int]]:
    """Dispatch on the schedule name (``"official"`` or ``"sliding"``)."""
    if schedule == "official":
        return official_windows(num_frames, size, overlap, stride)
    if schedule == "sliding":
        return sliding_windows(num_frames, size, overlap)
    from anycharv.errors import InputError

    raise InputError("context_schedule", f"expected one of {SCHEDULES}, got {schedule!r}")


def coverage_counts(windows: list[list[int]], num_frames: int) -> list[int]:
    """How many windows contain each frame (a frame listed twice in a window counts twice)."""
    counts = [0] * num_frames
    for window in windows:
        for f in window:
            counts[f] += 1
    return counts
