"""`anycharv infer` end to end on real sample videos with the random tiny preset, and its errors."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from anycharv.assets import asset_path
from anycharv.boxes import boxes_to_masks
from anycharv.cli import main
from anycharv.model.video_writer import write_video

VIDEO_60FPS = "pose2sim_cam01.mp4"  # 1080x1920 portrait, 60 fps, two tracked people in the first frames
VIDEO_30FPS = "sports2d_demo.mp4"  # 1768x994, 30 fps (VP9)


def _read(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    return frames, rate


def _last_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message on stderr"
    return err[-1]


def test_cli_tiny_preset_writes_mp4_at_source_fps(tmp_path):
    out = tmp_path / "out.mp4"
    inputs = tmp_path / "inputs"
    cmd = [sys.executable, "-m", "anycharv.cli", "infer", "--preset", "tiny", "--ref",
           str(asset_path("astronaut.png")),
           "--video", str(asset_path(VIDEO_60FPS)), "--out", str(out), "--max-frames", "8", "--size", "64",
           "--steps", "2", "--save-inputs", str(inputs), "--solver", "unipc", "--context-batch-size", "2"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", YOLO_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANDOM tiny weights" in proc.stderr and "meaningless" in proc.stderr
    frames, rate = _read(out)
    assert len(frames) == 8
    assert rate == Fraction(60)
    assert frames.shape[1:3] == (1920, 1080)  # composited back at the source size
    assert not list(tmp_path.glob(".*tmp*"))  # no temp file left behind
    # Outside the person's region the output is the source (up to H.264 loss).
    from anycharv.preprocessing.video_io import read_frames

    source = read_frames(str(asset_path(VIDEO_60FPS)), 0, 8)
    diff = np.abs(frames.astype(np.int16) - source.astype(np.int16)).mean(axis=3)
    masks, _ = _read(inputs / "masks.mp4")
    person = (masks[..., 0] > 127).any(axis=0)
    assert person.mean() < 0.5
    import cv2

    person_src = cv2.resize(person.astype(np.uint8), (1080, 1920), interpolation=cv2.INTER_NEAREST) > 0
    assert diff[:, ~person_src].mean() < 3.0
    # The reference was cut out (isnet) and letterboxed on black.
    from PIL import Image

    ref = np.asarray(Image.open(inputs / "reference.png"))
    assert ref.shape == (112, 64, 3)
    assert ref[0].max() < 10 and ref[-1].max() < 10


def _no_person_video(path):
    y, x = np.mgrid[0:96, 0:128]
    frames = np.stack([np.stack([(x * 2 + 8 * t) % 256, (y * 2) % 256, np.full_like(x, 90)], -1)
                       for t in range(6)]).astype(np.uint8)
    return write_video(path, frames, 25)


@pytest.mark.parametrize("case", ["image_text", "video_text", "video_missing", "no_person", "bad_size", "out_is_dir",
                                  "out_under_file", "out_unwritable", "save_inputs_is_file",
                                  "parity_solver"])
def test_cli_bad_inputs_fail_with_one_line(case, tmp_path, capsys):
    ref, video = str(asset_path("grace_hopper.jpg")), str(asset_path(VIDEO_60FPS))
    extra = ["--size", "64"]
    out = tmp_path / "o.mp4"
    if case == "out_is_dir":  # the output checks come before any decoding or model
        out.mkdir()
        expect = "is a folder"
    elif case == "out_under_file":
        (tmp_path / "plain").write_text("x")
        out = tmp_path / "plain" / "o.mp4"
        expect = "is a file, not a folder"
    elif case == "out_unwritable":  # /sys refuses new files even to root
        out = __import__("pathlib").Path("/sys/anycharv-test/o.mp4")
        expect = "cannot write in /sys"
    elif case == "save_inputs_is_file":
        (tmp_path / "inputs").write_text("x")
        extra += ["--save-inputs", str(tmp_path / "inputs")]
        expect = "--save-inputs"
    elif case == "parity_solver":
        extra += ["--parity", "--solver", "dpmpp"]
        expect = "--parity needs ddim"
    elif case == "image_text":
        ref = tmp_path / "ref.png"
        ref.write_text("not an image")
        expect = "ref.png"
    elif case == "video_text":
        video = tmp_path / "clip.mp4"
        video.write_text("hello, I am a text file\n" * 20)
        expect = "clip.mp4"
    elif case == "video_missing":
        video = tmp_path / "nothing.mp4"
        expect = "nothing.mp4"
    elif case == "no_person":
        video = _no_person_video(tmp_path / "empty_scene.mp4")
        expect = "no person"
    else:
        extra = ["--size", "60"]
        expect = "multiple of 8"
    rc = main(["infer", "--preset", "tiny", "--ref", str(ref), "--video", str(video), "--out",
               str(out), "--max-frames", "6", "--steps", "1", *extra])
    line = _last_line_error(capsys)
    assert rc == 1
    assert line.startswith("anycharv infer: error:") and expect in line, line
    assert not out.is_file()


def test_cli_unknown_person_lists_track_ids(tmp_path, capsys):
    rc = main(["infer", "--preset", "tiny", "--ref", str(asset_path("grace_hopper.jpg")), "--video",
               str(asset_path(VIDEO_60FPS)), "--out", str(tmp_path / "o.mp4"), "--max-frames", "4", "--size", "64",
               "--person", "999"])
    line = _last_line_error(capsys)
    assert rc == 1
    assert "999" in line and "tracked people: 1, 2" in line, line
    rc = main(["infer", "--ref", str(asset_path("grace_hopper.jpg")), "--video", str(asset_path(VIDEO_60FPS)),
               "--list-people", "--max-frames", "4"])
    out = capsys.readouterr().out
    assert rc == 0 and "person 1:" in out and "person 2:" in out


def test_api_paste_back_keeps_pixels_outside_the_box(tmp_path):
    """The composited array (before encoding) equals the decoded source outside the box region."""
    from anycharv.inference.video import infer_video
    from anycharv.model.components import build_pipeline, load_components
    from anycharv.preprocessing.video_io import read_frames

    pipe = build_pipeline(load_components(preset="tiny"))
    pipe.set_progress_bar_config(disable=True)
    video = str(asset_path(VIDEO_30FPS))
    result = infer_video(pipe, str(asset_path("grace_hopper.jpg")), video, size=64, max_frames=6, steps=2,
                         guidance=3.0, seed=1)
    target = result.target
    assert result.video.shape == (6, 994, 1768, 3) and result.video.dtype == np.uint8
    assert result.generated.shape == (6, 64, 112, 3) and target.model_size == (112, 64)
    assert result.fps == 30
    source = read_frames(video, 0, 6)  # decoded independently of the API
    assert np.array_equal(target.source_frames, source)
    region = boxes_to_masks(target.boxes, 994, 1768) > 0
    assert 0.01 < region.mean() < 0.5
    assert np.array_equal(result.video[~region], source[~region])
    inside = result.video[region].astype(np.int16) - source[region].astype(np.int16)
    assert np.abs(inside).mean() > 5  # the region was really replaced
    # No paste-back: the raw generated frames at the model size.
    raw = infer_video(pipe, str(asset_path("grace_hopper.jpg")), target=target, steps=2, seed=1, paste_back=False)
    assert raw.video.shape == (6, 64, 112, 3) and np.array_equal(raw.video, result.generated)


def test_api_frame_count_mismatch_is_an_input_error(tmp_path):
    from anycharv.errors import InputError
    from anycharv.inference.target_prep import prepare_target
    from anycharv.inference.video import infer_video
    from anycharv.model.components import build_pipeline, load_components

    target = prepare_target(str(asset_path(VIDEO_30FPS)), size=64, max_frames=4)
    target.poses = target.poses[:3]
    pipe = build_pipeline(load_components(preset="tiny"))
    with pytest.raises(InputError, match="frame counts disagree"):
        infer_video(pipe, str(asset_path("grace_hopper.jpg")), target=target, steps=1)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_api_on_gpu_half_precision(dtype):
    """Same path on CUDA in half precision (skipped without a GPU)."""
    import torch

    from anycharv.devices import pick_device, pick_dtype
    from anycharv.inference.video import infer_video
    from anycharv.model.components import build_pipeline, load_components

    device = pick_device("auto")
    pipe = build_pipeline(load_components(preset="tiny"), device=device, dtype=pick_dtype(device, dtype))
    pipe.set_progress_bar_config(disable=True)
    video = str(asset_path(VIDEO_30FPS))
    result = infer_video(pipe, str(asset_path("grace_hopper.jpg")), video, size=64, max_frames=4, steps=2)
    assert result.video.shape == (4, 994, 1768, 3) and result.timings["device"].startswith("cuda")
    region = boxes_to_masks(result.target.boxes, 994, 1768) > 0
    assert np.array_equal(result.video[~region], result.target.source_frames[~region])
    assert torch.cuda.max_memory_allocated() > 0
