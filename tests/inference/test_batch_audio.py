"""The batch outputs' sound: the source's audio track, cut to the frames used, muxed next to the
encoded frames (synthetic media written with PyAV; no models)."""

from __future__ import annotations

import av
import numpy as np
import pytest

from anycharv.inference.audio import has_audio, write_video_with_audio
from anycharv.model.video_writer import write_video

RATE = 48000


def tone_video(path, seconds_audio: float = 1.0, frames: int = 30, channels: str = "stereo"):
    """A 30 fps grey video of ``frames`` frames with a rising tone (its pitch tells the time)."""
    with av.open(str(path), mode="w") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream("aac", rate=RATE, layout=channels)
        for i in range(frames):
            for packet in video.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 4 * i, np.uint8), "rgb24")):
                out.mux(packet)
        t = np.arange(int(seconds_audio * RATE)) / RATE
        wave = (0.25 * np.sin(2 * np.pi * (200 + 400 * t) * t)).astype(np.float32)
        planes = np.stack([wave] * (2 if channels == "stereo" else 1))
        for first in range(0, planes.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes[:, first:first + 1024]), format="fltp",
                                               layout=channels)
            frame.sample_rate, frame.pts = RATE, first
            for packet in audio.encode(frame):
                out.mux(packet)
        for stream in (audio, video):
            for packet in stream.encode(None):
                out.mux(packet)
    return path


def audio_seconds(path) -> float | None:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


@pytest.mark.parametrize("begin, frames, channels", [(0.0, 8, "stereo"), (0.4, 12, "mono"), (0.9, 6, "stereo")])
def test_audio_is_cut_to_the_frames_used(tmp_path, begin, frames, channels):
    source = tone_video(tmp_path / "src.mp4", channels=channels)
    out = tmp_path / "out.mp4"
    codec = write_video_with_audio(out, np.zeros((frames, 48, 64, 3), np.uint8), 30, audio_from=source, begin_s=begin)
    assert codec == "aac" and has_audio(out)
    expected = min(frames / 30, 1.0 - begin)  # the tone ends at 1 s
    assert audio_seconds(out) == pytest.approx(expected, abs=0.025)
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(container.streams.video[0])) == frames
        assert container.streams.audio[0].codec_context.channels == (2 if channels == "stereo" else 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "src.mp4"]  # no temporary file left


def _samples(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray() for f in container.decode(container.streams.audio[0])], axis=1)[0]


def test_the_cut_starts_at_the_first_frame_used(tmp_path):
    source = tone_video(tmp_path / "src.mp4", channels="mono")
    out = tmp_path / "out.mp4"
    write_video_with_audio(out, np.zeros((12, 48, 64, 3), np.uint8), 30, audio_from=source, begin_s=0.4)
    whole, cut = _samples(source), _samples(out)
    probe = cut[2048:6048]  # a stretch of the chirp, whose pitch differs at every instant
    found = int(np.argmax(np.correlate(whole, probe, mode="valid")))
    assert abs((found - 2048) / RATE - 0.4) < 0.001


def test_no_audio_track_or_none_in_the_span_writes_the_video_alone(tmp_path):
    silent_source = write_video(tmp_path / "silent.mp4", np.zeros((4, 48, 64, 3), np.uint8), 30)
    frames = np.zeros((4, 48, 64, 3), np.uint8)
    assert write_video_with_audio(tmp_path / "a.mp4", frames, 30, audio_from=silent_source) == "none"
    assert write_video_with_audio(tmp_path / "b.mp4", frames, 30, audio_from=None) == "none"
    late = write_video_with_audio(tmp_path / "c.mp4", frames, 30, audio_from=tone_video(tmp_path / "t.mp4"),
                                  begin_s=2.0)
    assert late == "none" and audio_seconds(tmp_path / "c.mp4") is None
    assert all(not has_audio(tmp_path / n) for n in ("a.mp4", "b.mp4", "c.mp4"))
