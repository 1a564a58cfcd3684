"""Small real stages for the runner tests: they decode the real sample videos with PyAV and compute
frame statistics with numpy, so the runner is exercised on real work without the heavy models.

Every setup()/process call leaves a file in ``calls_dir`` (one file per call, so concurrent actors
never share a file); tests count them to prove that a rerun does no stage work.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import numpy as np

from anycharv.config import StrictModel, config_hash
from anycharv.errors import InputError
from anycharv.executor.stage import Stage, StageResources
from anycharv.preprocessing.records import ClipTask


class ToyConfig(StrictModel):
    clip_len: int = 6
    max_clips: int = 3
    thumb: int = 32
    min_luma: float = 0.0
    calls_dir: str = ""


def _log_call(cfg: ToyConfig, stage: str, kind: str, clip_ids: list[str]) -> None:
    if cfg.calls_dir:
        path = Path(cfg.calls_dir) / f"{stage}-{kind}-{uuid.uuid4().hex}.json"
        record = {"stage": stage, "kind": kind, "clips": clip_ids, "pid": os.getpid(), "t": time.time()}
        path.write_text(json.dumps(record))


def toy_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def toy_plan(source: str, cfg: ToyConfig, work_root: str) -> list[ClipTask]:
    """Probe with PyAV and cut the first ``max_clips`` windows of ``clip_len`` frames."""
    import av

    try:
        with av.open(source) as container:
            if not container.streams.video:
                raise InputError(source, "no video stream", code="not_video")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 0)
            frames = stream.frames or 0
            width, height = stream.codec_context.width, stream.codec_context.height
    except av.error.FFmpegError as exc:
        raise InputError(source, f"cannot open ({exc})", code="unreadable") from exc
    if frames < cfg.clip_len:
        raise InputError(source, f"{frames} frames < {cfg.clip_len}", code="too_short")
    digest, chash = toy_digest(source), config_hash(cfg)
    tasks = []
    for i in range(min(cfg.max_clips, frames // cfg.clip_len)):
        start, end = i * cfg.clip_len, (i + 1) * cfg.clip_len
        cid = hashlib.sha256(f"{digest}:{start}:{end}:{chash}".encode()).hexdigest()[:20]
        tasks.append(ClipTask(clip_id=cid, source=source, start_frame=start, end_frame=end, fps=fps, width=width,
                              height=height, src_width=width, src_height=height, work_dir=os.path.join(work_root, cid),
                              frames_key=f"{digest}:{start}:{end}"))
    return tasks


def read_grey(task: ClipTask, size: int) -> np.ndarray:
    """(T, size, size) grey frames of the clip, in [0, 1]."""
    import av

    out = []
    with av.open(task.source) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= task.end_frame:
                break
            if index >= task.start_frame:
                out.append(frame.to_ndarray(format="gray", width=size, height=size).astype(np.float32) / 255.0)
    return np.stack(out)


class FrameStatsStage(Stage):
    name = "framestats"
    resources = StageResources(cpus=1)
    batch_size = 2
    depends_on = ()

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg

    def cache_settings(self):
        return {"thumb": self.cfg.thumb}

    def setup(self) -> None:
        _log_call(self.cfg, self.name, "setup", [])

    def process_batch(self, tasks):
        _log_call(self.cfg, self.name, "process", [t.clip_id for t in tasks])
        return super().process_batch(tasks)

    def process_one(self, task: ClipTask) -> ClipTask:
        grey = read_grey(task, self.cfg.thumb)
        stats = np.stack([grey.mean(axis=(1, 2)), grey.std(axis=(1, 2))], axis=1)
        np.save(Path(task.work_dir) / "frame_stats.npy", stats)
        task.annotations["frame_stats"] = "frame_stats.npy"
        task.stats.update(mean_luma=round(float(stats[:, 0].mean()), 6), frames_read=int(len(grey)),
                          motion={"mean": round(float(np.abs(np.diff(grey, axis=0)).mean()), 6)})
        return task


class LumaFilterStage(Stage):
    name = "lumafilter"
    resources = StageResources(cpus=1)
    batch_size = 1
    depends_on = ("framestats",)

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg

    def cache_settings(self):
        return {"min_luma": self.cfg.min_luma}

    def setup(self) -> None:
        _log_call(self.cfg, self.name, "setup", [])

    def process_batch(self, tasks):
        _log_call(self.cfg, self.name, "process", [t.clip_id for t in tasks])
        return super().process_batch(tasks)

    def process_one(self, task: ClipTask) -> ClipTask:
        stats = np.load(Path(task.work_dir) / "frame_stats.npy")
        if stats[:, 0].mean() < self.cfg.min_luma:
            return task.reject("too_dark", f"mean luma {stats[:, 0].mean():.3f} < {self.cfg.min_luma}")
        (Path(task.work_dir) / "keep.json").write_text(json.dumps({"keep": True}))
        task.annotations["keep"] = "keep.json"
        task.stats["kept"] = True
        return task


class BrokenSetupStage(Stage):
    name = "broken"

    def setup(self) -> None:
        raise FileNotFoundError("weights /nowhere/model.onnx are missing")

    def process_one(self, task):  # pragma: no cover - never reached
        return task


class FailingBatchStage(Stage):
    """Raises out of process_batch for clips whose start frame is in ``bad_starts`` (a stage bug), and
    inside process_one for the clip starting at ``bad_clip_start``."""

    name = "flaky"

    def __init__(self, bad_starts: tuple[int, ...], bad_clip_start: int | None = 0):
        super().__init__()
        self.bad_starts = bad_starts
        self.bad_clip_start = bad_clip_start

    def process_batch(self, tasks):
        if any(t.start_frame in self.bad_starts for t in tasks):
            raise RuntimeError("boom in a whole batch")
        return super().process_batch(tasks)

    def process_one(self, task):
        if task.start_frame == self.bad_clip_start:
            raise ValueError("bad clip")
        return task


class DyingStage(Stage):
    """Kills its own worker process on the clip starting at ``die_start`` (a segfault or OOM kill)."""

    name = "dying"

    def __init__(self, die_start: int):
        super().__init__()
        self.die_start = die_start

    def process_one(self, task):
        if task.start_frame == self.die_start:
            os._exit(3)
        return task


def read_calls(calls_dir: str | Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in Path(calls_dir).glob("*.json")), key=lambda c: c["t"])


def toy_stages(cfg: ToyConfig) -> list[Stage]:
    return [FrameStatsStage(cfg), LumaFilterStage(cfg)]
