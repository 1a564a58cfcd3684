"""``anycharv preprocess`` with an unusable output or no usable input: one line on stderr, exit 1,
decided before Prefect or Ray start where possible, nothing created; when inputs were tried and all
rejected, the rows with their reasons are still written."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from anycharv.cli import main

SMALL = ["decode.short_side=256", "split.clip_len=8", "split.min_len=8", "runtime.progress=false"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("anycharv preprocess: error:"), err
    return err[0]


@pytest.mark.parametrize("case", ["output_is_file", "output_under_file", "output_unwritable"])
def test_preprocess_bad_output_is_one_line_before_any_work(case, tmp_path, capsys):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00" * 64)
    if case == "output_is_file":
        out = tmp_path / "out"
        out.write_text("I am a file")
        expect = "exists and is not a folder"
    elif case == "output_under_file":
        (tmp_path / "plain").write_text("x")
        out = tmp_path / "plain" / "out"
        expect = "is a file, not a folder"
    else:
        out = Path("/sys/anycharv-test-out")
        expect = "cannot write in /sys"
    code = main(["preprocess", "-i", str(video), "-o", str(out), *SMALL])
    line = _one_error_line(capsys)
    assert code == 1 and expect in line and str(out) in line, line
    assert not (tmp_path / "plain" / "out").exists()


@pytest.mark.parametrize("case", ["empty_folder", "glob_matches_nothing", "only_missing_paths"])
def test_preprocess_without_any_input_file_fails_at_once(case, tmp_path, capsys):
    if case == "empty_folder":
        (tmp_path / "videos").mkdir()
        (tmp_path / "videos" / "notes.txt").write_text("no video here")
        inputs, expect = ["-i", str(tmp_path / "videos")], "holds no video"
    elif case == "glob_matches_nothing":
        inputs, expect = ["-i", str(tmp_path / "*.mp4")], "matches no file"
    else:
        inputs, expect = ["-i", str(tmp_path / "a.mp4"), "-i", str(tmp_path / "b.mov")], "b.mov' does not exist"
    code = main(["preprocess", *inputs, "-o", str(tmp_path / "out"), *SMALL])
    line = _one_error_line(capsys)
    assert code == 1 and "no input video" in line and expect in line, line
    assert not (tmp_path / "out").exists()  # no Prefect, no Ray, no output skeleton


def test_preprocess_all_inputs_rejected_exits_1_with_the_rows_written(prefect_harness, ray_local, tmp_path, capsys):
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    (tmp_path / "empty.mp4").write_bytes(b"")
    out = tmp_path / "out"
    code = main(["preprocess", "-i", str(tmp_path / "*.mp4"), "-o", str(out), *SMALL])
    captured = capsys.readouterr()
    assert code == 1
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("anycharv preprocess: error: --input: no usable input") and "not_video=1" in last, last
    rows = pq.read_table(out / "manifest" / "clips.parquet").to_pylist()
    assert sorted((Path(r["source"]).name, r["reason"]) for r in rows) == [("empty.mp4", "empty_file"),
                                                                            ("notes.mp4", "not_video")]
