"""Probe, decode and resize source videos.

decord is the fast path; PyAV is the fallback for files or codecs decord cannot read (decord 0.6
fails mid-stream on some VP9 files, so only codecs it handles well go to it, and any decord error
switches that file to PyAV for the rest of the process). Every unusable input raises
``InputError(path, reason, code)``; codes: ``not_found``, ``empty_file``, ``not_video``,
``unreadable``, ``truncated``, ``zero_frames``, ``too_small``, ``too_large``, ``too_long``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass

import numpy as np

from anycharv.errors import InputError

log = logging.getLogger(__name__)

# Codecs decord 0.6 decodes reliably; anything else is read with PyAV.
DECORD_CODECS = {"h264", "hevc", "mpeg4", "mpeg2video", "mjpeg"}
# Demuxers of still images: a picture renamed to .mp4 is not a video.
IMAGE_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "gif", "tiff_pipe", "apng"}

_decord_failed: set[str] = set()


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    num_frames: int
    width: int
    height: int
    codec: str
    backend: str  # "decord" or "pyav"


def processing_size(src_w: int, src_h: int, short_side: int, multiple: int = 64,
                    upscale: bool = False) -> tuple[int, int]:
    """(width, height) after the resize policy: short side -> ``short_side`` (not above the source unless
    ``upscale``), each side rounded to the nearest multiple of ``multiple`` (at least one multiple).
    Rounding distorts the aspect ratio by at most half a multiple per side instead of cropping."""
    short = min(src_w, src_h)
    target = short_side if upscale else min(short_side, short)
    scale = target / short
    def snap(v: float) -> int:
        return max(multiple, int(round(v / multiple)) * multiple)
    return snap(src_w * scale), snap(src_h * scale)


# Leading bytes of common video containers: such a file that fails to open is damaged, not "not a video".
_VIDEO_MAGIC = ((4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"), (0, b"RIFF"), (0, b"OggS"), (0, b"FLV"),
                (0, b"\x00\x00\x01\xba"))


def _looks_like_video(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return any(head[off:off + len(magic)] == magic for off, magic in _VIDEO_MAGIC)


def _open_av(path: str):
    import av

    try:
        return av.open(path)
    except av.error.InvalidDataError as exc:
        if _looks_like_video(path):
            raise InputError(path, f"damaged video container ({exc})", code="unreadable") from exc
        raise InputError(path, f"not a video container ({exc})", code="not_video") from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(path, f"cannot open ({exc})", code="unreadable") from exc


def probe_video(path: str, decode_cfg=None) -> VideoInfo:
    """Frame count, fps, size and codec of ``path``; raises InputError for anything unusable.

    With ``decode_cfg`` (a DecodeConfig) the size limits are checked too."""
    path = str(path)
    if not os.path.isfile(path):
        raise InputError(path, "file not found", code="not_found")
    if os.path.getsize(path) == 0:
        raise InputError(path, "file is empty (0 bytes)", code="empty_file")
    container = _open_av(path)
    try:
        fmt = container.format.name
        if not container.streams.video:
            raise InputError(path, f"no video stream in the {fmt} container", code="not_video")
        if fmt in IMAGE_FORMATS:
            raise InputError(path, f"a still image ({fmt}), not a video", code="not_video")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        width, height = int(stream.width or 0), int(stream.height or 0)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        declared = int(stream.frames or 0)
        try:
            counted = sum(1 for pkt in container.demux(stream) if pkt.size > 0)
        except Exception as exc:  # a damaged container can fail while demuxing
            raise InputError(path, f"cannot demux ({exc})", code="unreadable") from exc
    finally:
        container.close()
    if counted == 0:
        raise InputError(path, "no video frames", code="zero_frames")
    if declared > 0 and counted < declared - max(2, int(0.02 * declared)):
        raise InputError(path, f"truncated: {counted} of {declared} declared frames present", code="truncated")
    if width <= 0 or height <= 0:
        raise InputError(path, "video stream has no frame size", code="unreadable")
    if not fps or not math.isfinite(fps) or fps <= 0:
        raise InputError(path, "video stream has no frame rate", code="unreadable")
    backend = "pyav"
    if decode_cfg is None or decode_cfg.backend != "pyav":
        if codec in DECORD_CODECS or (decode_cfg is not None and decode_cfg.backend == "decord"):
            backend = "decord"
    info = VideoInfo(path, fps, counted, width, height, codec, backend)
    if decode_cfg is not None:
        check_limits(info, decode_cfg)
    return info


def check_limits(info: VideoInfo, decode_cfg) -> None:
    if min(info.width, info.height) < decode_cfg.min_side:
        raise InputError(info.path, f"{info.width}x{info.height} is below the minimum side {decode_cfg.min_side}",
                         code="too_small")
    if info.width * info.height > decode_cfg.max_pixels:
        raise InputError(info.path, f"{info.width}x{info.height} exceeds max_pixels={decode_cfg.max_pixels}",
                         code="too_large")
    if info.num_frames > decode_cfg.max_frames:
        raise InputError(info.path, f"{info.num_frames} frames exceed max_frames={decode_cfg.max_frames}",
                         code="too_long")


@functools.lru_cache(maxsize=256)
def _codec_of(path: str, mtime_ns: int, size: int) -> str:
    try:
        container = _open_av(path)
    except InputError:
        return ""
    try:
        return container.streams.video[0].codec_context.name if container.streams.video else ""
    finally:
        container.close()


def _use_decord(path: str, backend: str | None) -> bool:
    if backend == "pyav" or path in _decord_failed:
        return False
    if backend == "decord":
        return True
    try:  # auto: decide from the codec
        st = os.stat(path)
    except OSError:
        return False
    return _codec_of(path, st.st_mtime_ns, st.st_size) in DECORD_CODECS


def read_frames(source: str, start: int, end: int, size: tuple[int, int] | None = None,
                backend: str | None = None) -> np.ndarray:
    """Frames ``[start, end)`` of ``source`` as uint8 RGB (T, H, W, 3), resized to ``size`` = (width, height).

    Raises InputError(code="unreadable") when the frames cannot be decoded."""
    source = str(source)
    if end <= start:
        raise ValueError(f"read_frames({source}): empty range [{start}, {end})")
    if _use_decord(source, backend):
        try:
            return _read_decord(source, start, end, size)
        except InputError:
            raise
        except Exception as exc:  # decord cannot decode this file: PyAV from now on
            log.info("decord failed on %s (%s); using PyAV", source, exc)
            _decord_failed.add(source)
    return _read_pyav(source, start, end, size)


@functools.lru_cache(maxsize=4)
def _decord_reader(source: str, mtime_ns: int, file_size: int, size):
    """Open readers are kept per process: decord indexes the whole file on open, and every stage
    reads clip after clip from the same source."""
    import decord

    kwargs = {} if size is None else {"width": int(size[0]), "height": int(size[1])}
    return decord.VideoReader(source, ctx=decord.cpu(0), num_threads=1, **kwargs)


def _read_decord(source: str, start: int, end: int, size) -> np.ndarray:
    st = os.stat(source)
    reader = _decord_reader(source, st.st_mtime_ns, st.st_size, None if size is None else (int(size[0]), int(size[1])))
    if end > len(reader):
        raise InputError(source, f"frames [{start}, {end}) requested but the video has {len(reader)}",
                         code="unreadable")
    frames = reader.get_batch(list(range(start, end))).asnumpy()
    return np.ascontiguousarray(frames, dtype=np.uint8)


def _read_pyav(source: str, start: int, end: int, size) -> np.ndarray:
    import av

    container = _open_av(source)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate)
        tb = float(stream.time_base)
        t0 = stream.start_time or 0
        frames = _decode_range(container, stream, start, end, size, rate, tb, t0, seek=start > 0)
        if frames is None:  # the seek landed after `start`: decode from the beginning
            frames = _decode_range(container, stream, start, end, size, rate, tb, t0, seek=True, from_zero=True)
    except av.error.FFmpegError as exc:
        raise InputError(source, f"decoding failed ({exc})", code="unreadable") from exc
    finally:
        container.close()
    if frames is None or len(frames) != end - start:
        got = 0 if frames is None else len(frames)
        raise InputError(source, f"only {got} of frames [{start}, {end}) could be decoded", code="unreadable")
    return np.stack(frames)


def _decode_range(container, stream, start, end, size, rate, tb, t0, seek, from_zero=False):
    if seek:
        target = t0 if from_zero else t0 + int(max(0.0, (start - 1) / rate) / tb)
        container.seek(target, stream=stream, backward=True, any_frame=False)
    out = []
    first = True
    counter = 0
    for frame in container.decode(stream):
        if frame.pts is not None:
            idx = int(round((frame.pts - t0) * tb * rate))
        else:
            idx = counter
        counter = idx + 1
        if first:
            first = False
            if idx > start:
                return None
        if idx < start:
            continue
        if idx >= end:
            break
        if size is None:
            arr = frame.to_ndarray(format="rgb24")
        else:
            arr = frame.to_ndarray(width=int(size[0]), height=int(size[1]), format="rgb24", interpolation="AREA")
        out.append(arr)
    return out


def read_grey_thumbnails(info: VideoInfo, width: int = 64, chunk: int = 512) -> np.ndarray:
    """All frames as small grey images (T, h, width) uint8, for the shot-cut detector (read in
    chunks, so long videos never sit in memory as RGB)."""
    height = max(8, int(round(info.height * width / info.width)))
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    out = np.empty((info.num_frames, height, width), np.uint8)
    for start in range(0, info.num_frames, chunk):
        end = min(info.num_frames, start + chunk)
        frames = read_frames(info.path, start, end, (width, height), backend=info.backend)
        out[start:end] = (frames.astype(np.float32) @ weights).clip(0, 255).astype(np.uint8)
    return out
