"""``run_batch`` end to end on real sample videos with the random tiny preset: every per-job error
next to finished jobs, the output layout, audio carried over and trimmed, reruns that skip finished
jobs and rerun changed ones, and one run on the ``ray-actors`` backend."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from anycharv.assets import asset_path
from anycharv.config import load_config
from anycharv.inference.batch_config import BatchJob
from anycharv.inference.batch_runner import run_batch
from anycharv.model.video_writer import write_video

FAST = ["runtime.executor=local", "runtime.progress=false", "batch.size=64", "batch.steps=2", "mask.size=512"]
SINE_HZ, SINE_RATE = 440.0, 44100


def sine_video(path: Path, frames: int = 12, seconds: float = 1.0) -> Path:
    """The first ``frames`` frames of the walking-person sample, downscaled, with a sine tone of
    ``seconds`` (longer than the video) as its audio track."""
    import cv2

    from anycharv.preprocessing.video_io import read_frames

    source = read_frames(str(asset_path("sports2d_demo.mp4")), 0, frames)
    small = [cv2.resize(f, (442, 248), interpolation=cv2.INTER_AREA) for f in source]
    with av.open(str(path), mode="w") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 442, 248, "yuv420p"
        audio = out.add_stream("aac", rate=SINE_RATE, layout="mono")
        for frame in small:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        tone = (0.3 * np.sin(2 * np.pi * SINE_HZ * np.arange(int(seconds * SINE_RATE)) / SINE_RATE)).astype(np.float32)
        for first in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, first:first + 1024], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = SINE_RATE, first
            for packet in audio.encode(chunk):
                out.mux(packet)
        for stream in (audio, video):
            for packet in stream.encode(None):
                out.mux(packet)
    return path


def no_person_video(path: Path) -> Path:
    y, x = np.mgrid[0:96, 0:128]
    frames = np.stack([np.stack([(x * 2 + 8 * t) % 256, (y * 2) % 256, np.full_like(x, 90)], -1)
                       for t in range(6)]).astype(np.uint8)
    return write_video(path, frames, 25)


def streams(path) -> dict:
    """{kind: (codec, seconds, frames-or-rate)} of an mp4, decoded."""
    out = {}
    with av.open(str(path)) as container:
        for stream in container.streams:
            if stream.type == "video":
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
                out["video"] = (stream.codec_context.name, len(frames), stream.average_rate, frames[0].shape[:2])
        container.seek(0)
        for stream in container.streams.audio:
            samples = sum(f.samples for f in container.decode(stream))
            out["audio"] = (stream.codec_context.name, float(stream.duration * stream.time_base), samples)
    return out


def write_table(path: Path, rows: list[tuple]) -> Path:
    header = "job_id,reference,video,person,steps,start,max_frames,output"
    path.write_text(header + "\n" + "".join(",".join("" if v is None else str(v) for v in row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("batch-inputs")
    sine_video(root / "sine.mp4")
    no_person_video(root / "empty_scene.mp4")
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(root / "plain.png")
    (root / "text.mp4").write_text("hello, I am a text file\n" * 20)
    (root / "text.png").write_text("not an image")
    astronaut, grace = asset_path("astronaut.png"), asset_path("grace_hopper.jpg")
    walk = asset_path("sports2d_demo.mp4")
    rows = [  # job_id, reference, video, person, steps, start, max_frames, output
        ("walk", astronaut, walk, None, None, None, 4, None),
        ("sine", grace, "sine.mp4", None, None, 2, 6, "nested/dir/sine.mp4"),
        ("empty_scene", astronaut, "empty_scene.mp4", None, None, None, 4, None),
        ("plain_ref", "plain.png", "sine.mp4", None, None, None, 4, None),
        ("text_video", astronaut, "text.mp4", None, None, None, 4, None),
        ("text_image", "text.png", "sine.mp4", None, None, None, 4, None),
        ("who", grace, "sine.mp4", 999, None, None, 4, None),
        ("missing", "missing.png", "sine.mp4", None, None, None, 4, None),
        ("escape", grace, "sine.mp4", None, None, None, 4, "../../escape.mp4"),
        ("dup", grace, "sine.mp4", None, None, None, 4, None),
        ("dup", astronaut, "sine.mp4", None, None, None, 4, "dup2.mp4"),
        ("zero", grace, "sine.mp4", None, 0, None, 4, None),
    ]
    return root, write_table(root / "jobs.csv", rows), rows


EXPECTED = {  # job_id -> (status, reason, text in the detail)
    "walk": ("ok", None, None), "sine": ("ok", None, None),
    "empty_scene": ("rejected", "no_person", "empty_scene.mp4: no person found"),
    "plain_ref": ("rejected", "no_person_reference", "plain.png: no person found"),
    "text_video": ("rejected", "unreadable_video", "text.mp4: not a video container"),
    "text_image": ("rejected", "unreadable_image", "text.png: not a readable image"),
    "who": ("rejected", "bad_person", "track id 999 does not exist"),
    "missing": ("rejected", "not_found", "missing.png: file not found"),
    "escape": ("rejected", "bad_output", "must not contain '..'"),
    "dup": ("rejected", "duplicate_job_id", "appears in rows 10, 11"),
    "zero": ("rejected", "bad_value", "steps: must be in [1, 1000], got 0"),
}
STAGE_JOBS = {"walk", "sine", "empty_scene", "plain_ref", "text_video", "text_image", "who"}


@pytest.fixture(scope="module")
def first_run(inputs, tmp_path_factory):
    _, table, _ = inputs
    out = tmp_path_factory.mktemp("batch-out") / "out"
    job = load_config(BatchJob, None, FAST)
    return out, run_batch(job, str(table), str(out), preset="tiny")


def test_every_bad_job_gets_its_reason_and_the_others_finish(inputs, first_run):
    root, _, rows = inputs
    out, summary = first_run
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["job_id"] for r in results] == [r[0] for r in rows]  # one row per table row, in order
    for result in results:
        status, reason, detail = EXPECTED[result["job_id"]]
        assert (result["status"], result["reason"]) == (status, reason), result
        if detail:
            assert detail in result["detail"] and result["detail"].startswith(f"job {result['job_id']}: "), result
    assert (summary.jobs, summary.ok, summary.rejected, summary.failed, summary.reused) == (12, 2, 10, 0, 0)
    assert summary.ran == len(STAGE_JOBS) and summary.frames == 10 and summary.jobs_per_hour > 0
    assert summary.reasons["duplicate_job_id"] == 2
    walk, sine = results[0], results[1]
    assert (walk["output"], walk["frames"], walk["fps"], walk["person"], walk["audio"]) == ("videos/walk.mp4", 4,
                                                                                            30.0, 1, "aac")
    assert (sine["output"], sine["frames"], sine["start"], sine["preview"]) == ("videos/nested/dir/sine.mp4", 6, 2,
                                                                                "previews/sine.png")
    assert walk["seconds"] > 0 and walk["key"] and walk["reference"] == str(asset_path("astronaut.png"))
    assert summary.outputs == [str(out / "videos/walk.mp4"), str(out / "videos/nested/dir/sine.mp4")]


def test_outputs_keep_source_fps_and_size_and_the_audio_trimmed_to_the_frames(inputs, first_run):
    out, _ = first_run
    walk = streams(out / "videos" / "walk.mp4")
    assert walk["video"][:4] == ("h264", 4, Fraction(30), (994, 1768))
    assert walk["audio"][0] == "aac" and walk["audio"][1] == pytest.approx(4 / 30, abs=0.03)
    sine = streams(out / "videos" / "nested" / "dir" / "sine.mp4")
    assert sine["video"][:4] == ("h264", 6, Fraction(30), (248, 442))
    assert sine["audio"][0] == "aac" and sine["audio"][1] == pytest.approx(6 / 30, abs=0.03)  # of 1 s of tone
    with av.open(str(out / "videos" / "nested" / "dir" / "sine.mp4")) as container:
        tone = np.concatenate([f.to_ndarray() for f in container.decode(container.streams.audio[0])], axis=1)[0]
    assert 0.2 < np.abs(tone).max() < 0.4  # the tone itself, not silence


def test_layout_previews_state_and_nothing_outside_the_output(inputs, first_run):
    from PIL import Image

    root, _, _ = inputs
    out, _ = first_run
    with Image.open(out / "previews" / "walk.png") as preview:
        assert preview.height == 256 and preview.width > 3 * 256  # source | result | reference
    assert sorted(p.stem for p in (out / ".state" / "jobs").glob("*.json")) == sorted(STAGE_JOBS)
    assert (out / "summary.json").is_file() and (out / "config.yaml").is_file()
    assert not list(out.rglob(".tmp-*"))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == ["videos/nested/dir/sine.mp4",
                                                                                 "videos/walk.mp4"]
    assert not list(out.parent.parent.rglob("escape.mp4")) and not list(root.rglob("*.png.tmp"))


def test_rerun_skips_finished_jobs_and_reruns_changed_or_missing_ones(inputs, first_run):
    root, table, rows = inputs
    out, first = first_run
    job = load_config(BatchJob, None, FAST)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    again = run_batch(job, str(table), str(out), preset="tiny")
    assert (again.ran, again.reused, again.ok, again.rejected) == (0, len(STAGE_JOBS), 2, 10)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == before
    results = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["reused"] for r in results] == [r[0] in STAGE_JOBS for r in rows]
    old = {r["job_id"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert old["walk"]["seconds"] == first.rows[0]["seconds"]  # the earlier run's figures, carried over

    changed = [("walk", *rows[0][1:4], 1, *rows[0][5:])] + rows[1:]  # steps 2 -> 1 for walk
    (out / "videos" / "nested" / "dir" / "sine.mp4").unlink()  # a finished job whose output went missing
    third = run_batch(job, str(write_table(root / "jobs-changed.csv", changed)), str(out), preset="tiny")
    assert (third.ran, third.reused, third.ok) == (2, len(STAGE_JOBS) - 2, 2)
    results = {r["job_id"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert results["walk"]["steps"] == 1 and not results["walk"]["reused"] and results["walk"]["key"] != \
        old["walk"]["key"]
    assert (out / "videos" / "nested" / "dir" / "sine.mp4").is_file() and results["sine"]["key"] == old["sine"]["key"]


def test_ray_actors_backend(inputs, ray_local, tmp_path):
    root, _, _ = inputs
    table = write_table(root / "jobs-ray.csv", [
        ("walk", asset_path("astronaut.png"), "sine.mp4", None, None, None, 3, None),
        ("plain_ref", "plain.png", "sine.mp4", None, None, None, 3, None),
    ])
    job = load_config(BatchJob, None, [*FAST, "runtime.executor=ray-actors", "runtime.cpus_per_worker=1"])
    summary = run_batch(job, str(table), str(tmp_path / "out"), preset="tiny")
    assert (summary.ok, summary.rejected, summary.failed) == (1, 1, 0), summary.rows
    assert summary.reasons == {"no_person_reference": 1}
    assert streams(tmp_path / "out" / "videos" / "walk.mp4")["video"][1] == 3
    shutil.rmtree(tmp_path / "out")
