"""The output video with the source's sound: the frames are encoded by ``write_video`` (H.264), then
remuxed (no second encode) into the final file together with the source's first audio track, cut to
the time span of the frames used and re-encoded as AAC (any source codec, sample-exact cut; a
stream copy could only cut at packet boundaries and would fail for codecs mp4 cannot hold).

The result appears under its final name only when complete (``anycharv.atomic``).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from anycharv.atomic import atomic_path

__all__ = ["has_audio", "write_video_with_audio", "mux_audio"]

AUDIO_CODEC = "aac"
CHUNK = 1024  # samples per frame handed to the encoder (AAC's frame size)


def has_audio(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a media file with at least one audio stream (False when unreadable)."""
    import av

    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except (av.error.FFmpegError, OSError):
        return False


def _stream_start(stream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _layout_name(stream) -> str:
    layout = getattr(stream.codec_context, "layout", None)
    name = getattr(layout, "name", "") if layout is not None else ""
    if name:
        return name
    return "mono" if (stream.codec_context.channels or 1) == 1 else "stereo"


def _audio_packets(source, audio, out_stream, begin: float, end: float) -> list:
    """Encoded packets of ``audio`` (a stream of the open container ``source``) for the source time
    span [begin, end) seconds, starting at pts 0 in ``out_stream``."""
    import av

    rate = int(out_stream.codec_context.sample_rate)
    layout = out_stream.codec_context.layout.name
    to_planar = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    wanted = int(round((end - begin) * rate))
    if begin > 1.0:  # start decoding a little early: the seek lands on a packet at or before ``begin``
        source.seek(int((begin - 1.0) / audio.time_base), stream=audio, backward=True, any_frame=False)
    pending: list[np.ndarray] = []
    buffered = written = 0
    next_start: float | None = None  # source time of the next sample when frames lack a pts
    packets = []

    def encode(samples: np.ndarray) -> None:
        nonlocal written
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = written
        frame.time_base = Fraction(1, rate)
        written += samples.shape[1]
        packets.extend(out_stream.encode(frame))

    for frame in source.decode(audio):
        first = float(frame.pts * frame.time_base) if frame.pts is not None else next_start
        if first is None:
            first = begin
        next_start = first + frame.samples / float(frame.sample_rate or rate)
        if next_start <= begin:
            continue
        if first >= end:
            break
        for converted in to_planar.resample(frame):
            samples = converted.to_ndarray().reshape(len(converted.layout.channels), -1)
            offset = int(round((first - begin) * rate))  # sample index in the output of samples[:, 0]
            lo, hi = max(0, -offset), min(samples.shape[1], wanted - offset)
            if hi > lo:
                pending.append(samples[:, lo:hi])
                buffered += hi - lo
            first += samples.shape[1] / rate
        while buffered >= CHUNK:
            block = np.concatenate(pending, axis=1)
            encode(block[:, :CHUNK])
            pending, buffered = [block[:, CHUNK:]], block.shape[1] - CHUNK
        if written + buffered >= wanted:
            break
    if buffered:
        encode(np.concatenate(pending, axis=1)[:, :max(0, wanted - written)])
    packets.extend(out_stream.encode(None))
    return packets


def mux_audio(video_only: str | os.PathLike, source: str | os.PathLike, begin_s: float, duration_s: float,
              out: str | os.PathLike) -> bool:
    """Write ``out``: the video stream of ``video_only`` (copied) plus the first audio track of
    ``source`` from ``begin_s`` (seconds after the source's first video frame) for ``duration_s``.
    Returns False when ``source`` has no audio track (nothing written) or none in that span."""
    import av

    with av.open(str(source)) as src:
        if not src.streams.audio:
            return False
        audio = src.streams.audio[0]
        start = (_stream_start(src.streams.video[0]) if src.streams.video else 0.0) + begin_s
        rate = int(audio.codec_context.sample_rate or audio.rate or 44100)
        with av.open(str(video_only)) as vin, av.open(str(out), mode="w") as dst:
            video_in = vin.streams.video[0]
            video_out = dst.add_stream_from_template(video_in)
            audio_out = dst.add_stream(AUDIO_CODEC, rate=rate, layout=_layout_name(audio))
            sound = _audio_packets(src, audio, audio_out, start, start + duration_s)
            queue = iter(sound)
            waiting = next(queue, None)
            for packet in vin.demux(video_in):
                if packet.dts is None:  # the demuxer's flush packet
                    continue
                at = float(packet.dts * packet.time_base)
                while waiting is not None and waiting.pts is not None and float(waiting.pts * waiting.time_base) <= at:
                    dst.mux(waiting)
                    waiting = next(queue, None)
                packet.stream = video_out
                dst.mux(packet)
            while waiting is not None:
                dst.mux(waiting)
                waiting = next(queue, None)
    return any(packet.size for packet in sound)


def write_video_with_audio(path: str | os.PathLike, frames: np.ndarray, fps: float, *,
                           audio_from: str | os.PathLike | None = None, begin_s: float = 0.0,
                           crf: int = 18) -> str:
    """Encode ``frames`` as ``path`` at ``fps``, with the audio of ``audio_from`` from ``begin_s``
    for the frames' duration when it has any. Returns the audio codec written, or "none" (no audio
    track, or none in the frames' span)."""
    from anycharv.model.video_writer import as_fraction, write_video

    path = Path(path)
    if audio_from is None or not has_audio(audio_from):
        write_video(path, frames, fps, crf=crf)
        return "none"
    duration = len(frames) / float(as_fraction(fps))
    with atomic_path(path, keep_suffix=True) as final:
        silent = final.with_name(f"{final.stem}-video{final.suffix}")
        try:
            write_video(silent, frames, fps, crf=crf)
            muxed = mux_audio(silent, audio_from, begin_s, duration, final)
        finally:
            silent.unlink(missing_ok=True)
    return AUDIO_CODEC if muxed else "none"
