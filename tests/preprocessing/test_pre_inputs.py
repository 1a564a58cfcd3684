"""Planning and bad inputs: every unusable input gets its reason code, nothing crashes, clips never
cross a shot cut, ids are content-derived. Crowd / empty videos go through the real stages."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from anycharv.assets import asset_path
from anycharv.errors import InputError
from anycharv.preprocessing.config import PreprocessConfig
from anycharv.preprocessing.plan import plan_video, source_digest
from anycharv.preprocessing.records import ClipTask
from anycharv.preprocessing.stages import DetectTrackStage, PeopleFilterStage, process_clip_plain, run_stages
from anycharv.preprocessing.video_io import probe_video, read_frames


def write_video(path: Path, frames: np.ndarray, fps: int = 30, codec: str = "libx264") -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for pkt in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path


def small_cfg(**over) -> PreprocessConfig:
    base = {"decode": {"short_side": 256}, "split": {"clip_len": 12, "stride": 12, "min_len": 8},
            "detect": {"imgsz": 416, "device": "cpu"}, "mask": {"size": 256, "device": "cpu"},
            "pose": {"imgsz": 416, "device": "cpu"}, "preview": {"enabled": False}}
    for k, v in over.items():
        base.setdefault(k, {}).update(v)
    return PreprocessConfig.model_validate(base)


@pytest.fixture(scope="module")
def sample_frames():
    """Frames 0-11 of the real sports2d demo (one person on the left) at 448x256."""
    return read_frames(str(asset_path("sports2d_demo.mp4")), 0, 12, (448, 256))


@pytest.fixture(scope="module")
def detect_stages():
    cfg = small_cfg()
    stages = [DetectTrackStage(cfg.detect), PeopleFilterStage(cfg.filter)]
    for s in stages:
        s.ensure_setup()
    return stages


def expect_code(path, code, cfg=None):
    with pytest.raises(InputError) as err:
        plan_video(str(path), cfg or small_cfg(), "/nonexistent-work-root")
    assert err.value.code == code, str(err.value)
    assert str(path) in str(err.value)


def test_bad_files_are_rejected_with_reason_codes(tmp_path):
    src = asset_path("sports2d_demo.mp4")
    data = Path(src).read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 4])
    expect_code(tmp_path / "truncated.mp4", "truncated")
    # an mp4 cut before its index (moov atom) cannot even be opened: damaged, not "not a video"
    p2s = Path(asset_path("pose2sim_cam01.mp4")).read_bytes()
    (tmp_path / "no_index.mp4").write_bytes(p2s[: len(p2s) // 3])
    expect_code(tmp_path / "no_index.mp4", "unreadable")
    (tmp_path / "empty.mp4").write_bytes(b"")
    expect_code(tmp_path / "empty.mp4", "empty_file")
    (tmp_path / "notes.mp4").write_text("this is a text file, not a video\n" * 20)
    expect_code(tmp_path / "notes.mp4", "not_video")
    shutil.copy(asset_path("bus.jpg"), tmp_path / "photo.mp4")
    expect_code(tmp_path / "photo.mp4", "not_video")
    expect_code(tmp_path / "missing.mp4", "not_found")


def test_size_and_length_limits(tmp_path):
    tiny = write_video(tmp_path / "tiny.mp4", np.full((8, 24, 32, 3), 90, np.uint8))
    expect_code(tiny, "too_small")
    big = write_video(tmp_path / "big.mp4", np.zeros((1, 4500, 8000, 3), np.uint8), codec="mpeg4")
    expect_code(big, "too_large")
    info = probe_video(str(big))
    assert (info.width, info.height) == (8000, 4500)
    # the limit is configurable
    expect_code(big, "too_short", small_cfg(decode={"max_pixels": 8000 * 4500}))
    short = write_video(tmp_path / "short.mp4", np.full((5, 96, 128, 3), 90, np.uint8))
    expect_code(short, "too_short")


def test_clip_len_longer_than_the_video_is_said_or_rejected(tmp_path):
    """A 20-frame video with clip_len 24: kept as a 20-frame clip flagged ``short_window`` when
    min_len allows it, rejected ``too_short`` when not."""
    video = write_video(tmp_path / "twenty.mp4", np.full((20, 96, 128, 3), 90, np.uint8))
    tasks = plan_video(str(video), small_cfg(split={"clip_len": 24, "stride": 24, "min_len": 16}), str(tmp_path))
    assert [(t.num_frames, t.stats["short_window"]) for t in tasks] == [(20, True)]
    full = plan_video(str(video), small_cfg(split={"clip_len": 10, "stride": 10, "min_len": 8}), str(tmp_path))
    assert [(t.num_frames, t.stats["short_window"]) for t in full] == [(10, False), (10, False)]
    expect_code(video, "too_short", small_cfg(split={"clip_len": 24, "stride": 24, "min_len": 24}))


def test_plan_never_crosses_a_shot_cut_and_ids_are_content_derived(tmp_path, sample_frames):
    other = read_frames(str(asset_path("pose2sim_cam01.mp4")), 0, 10, (144, 256))
    other = np.pad(other, ((0, 0), (0, 0), (152, 152), (0, 0)))  # same 448x256 canvas, different shot
    video = write_video(tmp_path / "two_shots.mp4", np.concatenate([sample_frames, other]))
    cfg = small_cfg(split={"clip_len": 6, "stride": 3, "min_len": 4})
    tasks = plan_video(str(video), cfg, str(tmp_path / "work"))
    ranges = [(t.start_frame, t.end_frame) for t in tasks]
    assert ranges == [(0, 6), (3, 9), (6, 12), (12, 18), (15, 21), (18, 22)]
    assert all(not (a < 12 < b) for a, b in ranges)
    t = tasks[0]
    assert (t.width, t.height, t.src_width, t.src_height) == (448, 256, 448, 256)
    assert t.fps == pytest.approx(30.0)
    assert t.work_dir == os.path.join(str(tmp_path / "work"), t.clip_id)
    assert len({x.clip_id for x in tasks}) == len(tasks)
    # same bytes under another name -> same ids; another config -> other ids
    copy = tmp_path / "copy.mp4"
    shutil.copy(video, copy)
    assert [x.clip_id for x in plan_video(str(copy), cfg, str(tmp_path / "w2"))] == [x.clip_id for x in tasks]
    other_cfg = small_cfg(split={"clip_len": 6, "stride": 3, "min_len": 4}, detect={"conf": 0.3})
    assert plan_video(str(video), other_cfg, str(tmp_path))[0].clip_id != t.clip_id
    assert source_digest(str(copy)) == source_digest(str(video))
    # tasks carry paths and numbers only: they survive a dict round trip
    assert ClipTask.from_dict(t.to_dict()) == t


def test_crowd_and_empty_videos_are_rejected_by_the_stages(tmp_path, sample_frames, detect_stages):
    from PIL import Image

    bus = np.asarray(Image.open(asset_path("bus.jpg")).convert("RGB").resize((256, 320)))
    crowd = write_video(tmp_path / "crowd.mp4", np.stack([np.roll(bus, k, axis=1) for k in range(12)]))
    scenery = sample_frames[:, :, 192:, :]  # right part of the real frames: trees and buildings, nobody
    empty = write_video(tmp_path / "empty_scene.mp4", scenery)
    person = write_video(tmp_path / "one_person.mp4", sample_frames)
    cfg = small_cfg()
    results = {}
    for name, path in {"crowd": crowd, "empty": empty, "person": person}.items():
        tasks = plan_video(str(path), cfg, str(tmp_path / "work"))
        results[name] = run_stages(tasks, detect_stages)
    crowd_t, empty_t, person_t = results["crowd"][0], results["empty"][0], results["person"][0]
    assert (crowd_t.status, crowd_t.reason) == ("rejected", "multiple_people"), crowd_t.detail
    assert crowd_t.stats["person_count_max"] >= 3
    assert (empty_t.status, empty_t.reason) == ("rejected", "no_person"), empty_t.detail
    assert person_t.ok, (person_t.reason, person_t.detail)
    counts = np.load(os.path.join(person_t.work_dir, person_t.annotations["person_counts"]))
    assert (counts == 1).all()


def test_process_clip_plain_raises_typed_errors_for_bad_sources(tmp_path):
    (tmp_path / "x.mp4").write_text("nope")
    with pytest.raises(InputError) as err:
        process_clip_plain(str(tmp_path / "x.mp4"), small_cfg(), str(tmp_path / "work"), stages=[])
    assert err.value.code == "not_video"
    assert not (tmp_path / "work").exists()


def test_decoders_agree_and_decord_failures_fall_back_to_pyav(tmp_path):
    from anycharv.preprocessing import video_io

    h264 = str(asset_path("pose2sim_cam01.mp4"))
    a = read_frames(h264, 40, 46, (128, 256), backend="decord")
    b = read_frames(h264, 40, 46, (128, 256), backend="pyav")
    assert a.shape == b.shape == (6, 256, 128, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 4  # same frames, different scalers
    assert np.abs(a[0].astype(int) - b[5].astype(int)).mean() > np.abs(a[0].astype(int) - b[0].astype(int)).mean()
    # decord 0.6 opens a PNG-in-MOV file but cannot decode it: the read falls back to PyAV
    frames = np.random.default_rng(3).integers(0, 255, (5, 64, 96, 3)).astype(np.uint8)  # a size decord fails on
    lossless = write_png_mov(tmp_path / "lossless.mov", frames)
    assert probe_video(str(lossless)).num_frames == 5
    np.testing.assert_array_equal(read_frames(str(lossless), 1, 4, backend="decord"), frames[1:4])
    assert str(lossless) in video_io._decord_failed
    np.testing.assert_array_equal(read_frames(str(lossless), 0, 5), frames)
    with pytest.raises(InputError) as err:
        read_frames(str(lossless), 3, 9)
    assert err.value.code == "unreadable"


def write_png_mov(path: Path, frames: np.ndarray) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("png", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        for f in frames:
            for pkt in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path
