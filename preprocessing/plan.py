"""Plan one source video into clip tasks: probe, shot cuts, fixed windows, content-derived ids.

Clip ids hash the source *bytes* (not its path), the frame range and the config's content hash
(``keys.content_hash``: what changes the annotations, not how or where the job runs), so a rerun
over the same data and config gives the same ids (idempotent outputs) and a changed config gives
new ones.
"""

from __future__ import annotations

import hashlib
import os

from anycharv.errors import InputError
from anycharv.hashing import sha256_file_cached
from anycharv.preprocessing.config import PreprocessConfig
from anycharv.preprocessing.keys import content_hash, frames_key
from anycharv.preprocessing.records import ClipTask
from anycharv.preprocessing.shot_cuts import detect_shot_cuts, shot_ranges, split_windows
from anycharv.preprocessing.video_io import VideoInfo, probe_video, processing_size, read_grey_thumbnails

CLIP_ID_LEN = 20


def source_digest(path: str) -> str:
    """sha256 of the file's bytes (streamed), cached per (absolute path, mtime, size)."""
    path = os.path.abspath(str(path))
    try:
        return sha256_file_cached(path)
    except OSError as exc:
        raise InputError(path, f"cannot stat ({exc})", code="not_found") from exc


def clip_id(digest: str, start: int, end: int, cfg_hash: str) -> str:
    return hashlib.sha256(f"{digest}:{start}:{end}:{cfg_hash}".encode()).hexdigest()[:CLIP_ID_LEN]


def plan_windows(info: VideoInfo, cfg: PreprocessConfig) -> list[tuple[int, int]]:
    """Clip frame ranges of a probed video (decodes small grey thumbnails for the cut detector)."""
    s = cfg.split
    if info.num_frames < s.min_len:
        return []
    grey = read_grey_thumbnails(info, width=s.cut_size)
    cuts = detect_shot_cuts(grey, threshold=s.cut_threshold, ratio=s.cut_ratio)
    windows = split_windows(shot_ranges(info.num_frames, cuts), s.clip_len, s.stride, s.min_len)
    if s.max_clips_per_video is not None:
        windows = windows[: s.max_clips_per_video]
    return windows


def plan_video(source: str, cfg: PreprocessConfig, work_root: str) -> list[ClipTask]:
    """ClipTasks of one source video; raises InputError (with a code) for unusable inputs, including
    ``too_short`` when no window of at least ``split.min_len`` frames fits in any shot. A clip shorter
    than ``split.clip_len`` (a short video or shot; at least ``min_len``) says so in its stats
    (``short_window``)."""
    source = str(source)
    info = probe_video(source, cfg.decode)
    windows = plan_windows(info, cfg)
    if not windows:
        raise InputError(source, f"no clip of at least {cfg.split.min_len} frames in {info.num_frames} frames",
                         code="too_short")
    d = cfg.decode
    width, height = processing_size(info.width, info.height, d.short_side, d.size_multiple, d.upscale)
    digest = source_digest(source)
    chash = content_hash(cfg)
    tasks = []
    for start, end in windows:
        cid = clip_id(digest, start, end, chash)
        tasks.append(ClipTask(
            clip_id=cid, source=os.path.abspath(source), start_frame=start, end_frame=end, fps=info.fps,
            width=width, height=height, src_width=info.width, src_height=info.height,
            work_dir=os.path.join(str(work_root), cid), frames_key=frames_key(digest, start, end, cfg.decode),
            stats={"source_sha256": digest, "config_hash": chash, "codec": info.codec, "decode_backend": info.backend,
                   "short_window": end - start < cfg.split.clip_len},
        ))
    return tasks
