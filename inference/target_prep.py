"""Prepare a target video for inference: decode, track people, pick the one to replace, and build
the model's inputs (frames, box masks, pose renders at the model size).

Every tracked person is kept (not just the main character the clip preprocessing picks), so the
user can choose whom to replace (``person``); the default is the same main-character rule as the
preprocessing. Boxes stay at source resolution for the paste-back; the model gets the whole frame
rescaled to its size, so source and model coordinates differ by one scale per axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from anycharv.boxes import boxes_to_masks, fill_missing_boxes, pad_boxes
from anycharv.errors import InputError
from anycharv.preprocessing.config import PreprocessConfig
from anycharv.preprocessing.detect_track import PersonTracker, choose_main_track, keep_torch_threads, make_tracker
from anycharv.preprocessing.video_io import probe_video, read_frames

__all__ = ["TargetInputs", "model_size", "read_target_frames", "track_people", "fill_box_gaps", "pad_boxes",
           "prepare_target"]

VAE_FACTOR = 8
MAX_ASPECT = 2.5  # default cap of the model canvas: long side at most this x the short side


@dataclass
class TargetInputs:
    """Everything inference needs from the target video (model size = (W, H) below)."""

    frames: np.ndarray  # (F,H,W,3) uint8, the whole source frame rescaled to the model size
    masks: np.ndarray  # (F,H,W) uint8, 255 inside the (padded) box of the chosen person
    poses: np.ndarray  # (F,H,W,3) uint8 pose renders of the chosen person
    boxes: np.ndarray  # (F,4) float32 padded boxes x0,y0,x1,y1 at source size (paste-back region)
    source_frames: np.ndarray  # (F,Hs,Ws,3) uint8 original frames (paste-back background)
    fps: float
    source_size: tuple[int, int]  # (W, H)
    model_size: tuple[int, int]  # (W, H)
    track_id: int
    track_ids: list[int]
    start_frame: int = 0
    keypoints: np.ndarray | None = None  # (F,K,3) source-size keypoints of the chosen person
    keypoint_layout: str | None = None
    track_lengths: dict[int, int] = field(default_factory=dict)


def default_max_long_side(short: int) -> int:
    return int(MAX_ASPECT * short) // VAE_FACTOR * VAE_FACTOR


def model_size(source_size: tuple[int, int], size: int | tuple[int, int],
               max_long_side: int | None = None) -> tuple[int, int]:
    """The model canvas (W, H): ``size`` = (W, H) as given, or a short side with the source's aspect
    ratio (long side rounded to a multiple of 8). Every side must be a positive multiple of 8 (VAE).

    With a short side, the long side is capped at ``max_long_side`` (default ``MAX_ASPECT`` x the short
    side; 0: no cap), shrinking the short side to keep the aspect ratio: a 1000x64 strip would
    otherwise run the model at 2000x128."""
    src_w, src_h = source_size
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise InputError("size", f"expected (W, H) or a short side, got {size!r}", code="bad_size")
        width, height = int(size[0]), int(size[1])
    else:
        short = int(size)
        if short <= 0 or short % VAE_FACTOR:
            raise InputError("size", f"short side must be a positive multiple of {VAE_FACTOR} (VAE factor), "
                                     f"got {size}", code="bad_size")
        aspect = max(src_w, src_h) / min(src_w, src_h)
        cap = default_max_long_side(short) if max_long_side is None else int(max_long_side)
        long = max(VAE_FACTOR, int(round(aspect * short / VAE_FACTOR)) * VAE_FACTOR)
        if cap and long > cap:
            if cap < 2 * VAE_FACTOR or cap % VAE_FACTOR:
                raise InputError("max_long_side", f"must be a multiple of {VAE_FACTOR} >= {2 * VAE_FACTOR}, got {cap}",
                                 code="bad_size")
            long, short = cap, max(2 * VAE_FACTOR, int(cap / aspect) // VAE_FACTOR * VAE_FACTOR)
        width, height = (short, long) if src_w <= src_h else (long, short)
    for name, value in (("width", width), ("height", height)):
        if value < 2 * VAE_FACTOR or value % VAE_FACTOR:
            raise InputError("size", f"{name} {value} is not a multiple of {VAE_FACTOR} >= {2 * VAE_FACTOR} "
                                     "(the VAE cannot take it)", code="bad_size")
    return width, height


def track_people(frames: np.ndarray, tracker: PersonTracker) -> dict[int, dict[int, np.ndarray]]:
    """All person tracks of a clip: {track id: {frame index: xyxy box}} (source pixels).

    Uses the preprocessing detector and Ultralytics tracker, but keeps every track instead of
    only the main one.
    """
    h, w = frames.shape[1:3]
    track = make_tracker(tracker.cfg.tracker)
    tracks: dict[int, dict[int, np.ndarray]] = {}
    results = tracker.detect(frames)
    for i, res in enumerate(results):
        boxes = res.boxes.cpu().numpy()
        if len(boxes):
            rows = track.update(boxes, np.ascontiguousarray(frames[i][..., ::-1]))
        else:
            rows = track.update(boxes)
        for row in np.asarray(rows).reshape(-1, 8):
            box = np.clip(row[:4].astype(np.float32), 0, [w, h, w, h])
            tracks.setdefault(int(row[4]), {})[i] = box
    return tracks


def fill_box_gaps(per_frame: dict[int, np.ndarray], num_frames: int) -> np.ndarray:
    """(F,4) boxes of one track: linear interpolation across frames where the tracker lost the
    person, and the nearest known box before the first / after the last detection."""
    boxes = np.full((num_frames, 4), np.nan)
    for i, box in per_frame.items():
        boxes[int(i)] = box
    return fill_missing_boxes(boxes, "track")


def _scale_boxes(boxes: np.ndarray, sx: float, sy: float) -> np.ndarray:
    return (np.asarray(boxes, np.float32) * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)


def _resize(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    out = np.empty((len(frames), height, width, 3), np.uint8)
    interp = cv2.INTER_AREA if width * height < frames.shape[1] * frames.shape[2] else cv2.INTER_CUBIC
    for i, f in enumerate(frames):
        out[i] = cv2.resize(f, (width, height), interpolation=interp)
    return out


def _pose(frames: np.ndarray, boxes: np.ndarray, cfg: PreprocessConfig, estimator=None) -> tuple[np.ndarray, str]:
    """Keypoints (F,K,3) of the person in ``boxes`` (source pixels, gaps interpolated) with the
    configured pose backend (the one the training data was annotated with; ``estimator``: one built
    already); a frame where no detection overlaps the box gets zero scores (an empty pose render)."""
    from anycharv.preprocessing.pose import build_pose_estimator

    with keep_torch_threads():
        estimator = estimator or build_pose_estimator(cfg.pose)
        keypoints = estimator(frames, boxes)
    return np.asarray(keypoints, np.float32), estimator.layout


def _render(keypoints: np.ndarray, layout: str, sx: float, sy: float, width: int, height: int,
            conf_threshold: float) -> np.ndarray:
    from anycharv.model.pose_render import render_pose

    out = np.zeros((len(keypoints), height, width, 3), np.uint8)
    for i, kp in enumerate(keypoints):
        scaled = kp.copy()
        scaled[:, 0] *= sx
        scaled[:, 1] *= sy
        out[i] = render_pose(scaled, layout, height, width, conf_threshold)
    return out


def read_target_frames(video: str, start: int = 0, max_frames: int | None = None):
    """Frames [start, start+max_frames) of ``video`` at source size -> (uint8 (F,H,W,3), VideoInfo).
    InputError for a missing, non-video or undecodable file, or a bad range."""
    info = probe_video(video)  # InputError for missing / non-video / unreadable files
    if start < 0 or start >= info.num_frames:
        raise InputError("start", f"frame {start} is outside {video} ({info.num_frames} frames)")
    if max_frames is not None and max_frames < 1:
        raise InputError("max_frames", f"must be >= 1, got {max_frames}")
    end = info.num_frames if max_frames is None else min(info.num_frames, start + max_frames)
    return read_frames(info.path, start, end, None, backend=info.backend), info


def prepare_target(video: str, cfg: PreprocessConfig | None = None, person: int | None = None,
                   size: int | tuple[int, int] = 512, max_frames: int | None = None, *,
                   start: int = 0, box_pad: float = 0.1, tracker: PersonTracker | None = None,
                   pose_conf_threshold: float | None = None, max_long_side: int | None = None,
                   pose_estimator=None) -> TargetInputs:
    """Decode ``video`` (frames [start, start+max_frames)), track every person, choose ``person``
    (a track id; default: the main character by ``cfg.detect.main_person``), and build the inputs.
    ``tracker`` / ``pose_estimator``: models built once by a caller that prepares many videos.

    Raises InputError for an unreadable video, a video without people, or an unknown person id
    (the message lists the ids found).
    """
    cfg = cfg or PreprocessConfig()
    info = probe_video(video)
    width, height = model_size((info.width, info.height), size, max_long_side)  # bad sizes fail before decoding
    source, info = read_target_frames(video, start, max_frames)
    num, src_h, src_w = source.shape[:3]
    end = start + num

    tracks = track_people(source, tracker or PersonTracker(cfg.detect))
    ids = sorted(tracks)
    if not ids:
        raise InputError(video, f"no person found in frames [{start}, {end})", code="no_person")
    if person is None:
        track_id = choose_main_track(tracks, cfg.detect.main_person)
    elif person in tracks:
        track_id = int(person)
    else:
        raise InputError("person", f"track id {person} does not exist in {video}; tracked people: "
                                   f"{', '.join(str(i) for i in ids)}", code="person_not_found")

    raw_boxes = fill_box_gaps(tracks[track_id], num)
    boxes = pad_boxes(raw_boxes, box_pad, src_w, src_h)
    sx, sy = width / src_w, height / src_h
    masks = boxes_to_masks(_scale_boxes(boxes, sx, sy), height, width)
    keypoints, layout = _pose(source, raw_boxes, cfg, pose_estimator)
    threshold = cfg.preview.conf_threshold if pose_conf_threshold is None else pose_conf_threshold
    poses = _render(keypoints, layout, sx, sy, width, height, threshold)
    frames = _resize(source, width, height)
    return TargetInputs(frames=frames, masks=masks, poses=poses, boxes=boxes, source_frames=source,
                        fps=info.fps, source_size=(src_w, src_h), model_size=(width, height), track_id=track_id,
                        track_ids=ids, start_frame=start, keypoints=keypoints, keypoint_layout=layout,
                        track_lengths={k: len(v) for k, v in tracks.items()})
