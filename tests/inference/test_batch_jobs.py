"""The batch job table: reading CSV/Parquet, whole-table errors, per-row rejections, output-name
sanitising and job keys (no models, no video decoding)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anycharv.errors import InputError
from anycharv.inference.batch_config import BatchConfig
from anycharv.inference.batch_jobs import (
    BatchTask,
    inside,
    job_key,
    model_identity,
    plan_jobs,
    read_job_table,
    safe_stem,
    sanitise_output,
)


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "media").mkdir()
    ref, video = tmp_path / "media" / "ref.png", tmp_path / "media" / "clip.mp4"
    ref.write_bytes(b"image bytes")
    video.write_bytes(b"video bytes")
    return tmp_path, ref, video


def _csv(path, text):
    path.write_text(text)
    return path


def _plan(path, **defaults):
    return {t.job_id or f"row{t.row}": t for t in plan_jobs(read_job_table(path), BatchConfig(**defaults), 128)}


def test_csv_rows_become_tasks_with_defaults_and_relative_paths(files):
    root, ref, video = files
    table = _csv(root / "jobs.csv", " Job_ID ,reference,video,steps,guidance,seed,person,note,output\n"
                                    "a,media/ref.png,media/clip.mp4,,,,,hello,\n"
                                    f"b,{ref},{video},4,2.5,7,3,,sub/b.MP4\n\n")
    read = read_job_table(table)
    assert read.ignored_columns == ["note"] and len(read.rows) == 2
    tasks = _plan(table, steps=12, seed=5, max_frames=9)
    a, b = tasks["a"], tasks["b"]
    assert a.ok and b.ok
    assert a.reference == str(ref) and a.video == str(video)  # relative to the table's folder
    assert (a.steps, a.guidance, a.seed, a.person, a.size, a.max_frames, a.output) == (12, 3.0, 5, None, 128, 9,
                                                                                       "a.mp4")
    assert (b.steps, b.guidance, b.seed, b.person, b.output, b.row) == (4, 2.5, 7, 3, "sub/b.MP4", 2)


def test_parquet_table_reads_like_csv(files):
    root, ref, video = files
    path = root / "jobs.parquet"
    pq.write_table(pa.table({"job_id": ["001", "002"], "reference": [str(ref), "media/ref.png"],
                             "video": [str(video), "media/clip.mp4"], "steps": [3, None],
                             "person": [1.0, float("nan")]}), path)
    tasks = _plan(path)
    assert set(tasks) == {"001", "002"}  # ids stay strings, leading zeros kept
    assert tasks["001"].steps == 3 and tasks["001"].person == 1
    assert tasks["002"].steps == 30 and tasks["002"].person is None and tasks["002"].ok
    pq.write_table(pa.table({"job_id": [7.0, 8.5], "reference": [str(ref)] * 2, "video": [str(video)] * 2}), path)
    assert set(_plan(path)) == {"7", "8.5"}  # a number column (pandas with gaps writes floats)


@pytest.mark.parametrize("case", ["no_column", "two_missing", "no_rows", "not_found", "suffix", "ragged", "parquet",
                                  "repeated"])
def test_table_level_errors_name_the_table_and_column(case, files):
    root, ref, video = files
    path = root / "jobs.csv"
    expect = str(path)
    if case == "no_column":
        _csv(path, f"job_id,reference\na,{ref}\n")
        expect = "missing required column(s) video"
    elif case == "two_missing":
        _csv(path, "job_id,person\na,1\n")
        expect = "missing required column(s) reference, video"
    elif case == "no_rows":
        _csv(path, "job_id,reference,video\n")
        expect = "no job rows"
    elif case == "not_found":
        path = root / "nothing.csv"
        expect = "file not found"
    elif case == "suffix":
        path = _csv(root / "jobs.xlsx", "x")
        expect = "expected a .csv, .tsv or .parquet"
    elif case == "ragged":
        _csv(path, f"job_id,reference,video\na,{ref},{video},extra\n")
        expect = "line 2 has 4 cells"
    elif case == "parquet":
        path = _csv(root / "jobs.parquet", "job_id,reference,video\n")
        expect = "not a readable Parquet file"
    else:
        _csv(path, f"job_id,reference,video,video\na,{ref},{video},{video}\n")
        expect = "video appear more than once"
    with pytest.raises(InputError) as info:
        read_job_table(path)
    assert expect in str(info.value) and str(path.name) in str(info.value)


def test_duplicate_ids_reject_every_row_of_that_id_only(files):
    root, ref, video = files
    path = _csv(root / "jobs.csv", f"job_id,reference,video\nx,{ref},{video}\ny,{ref},{video}\nx,{ref},{video}\n"
                                   f",{ref},{video}\n")
    tasks = plan_jobs(read_job_table(path), BatchConfig(), 128)
    assert [(t.job_id, t.status, t.reason) for t in tasks] == [
        ("x", "rejected", "duplicate_job_id"), ("y", "ok", ""), ("x", "rejected", "duplicate_job_id"),
        ("", "rejected", "bad_value")]
    assert "rows 1, 3" in tasks[0].detail and "job_id is empty" in tasks[3].detail


@pytest.mark.parametrize("name, why", [
    ("../escape.mp4", "'..'"), ("a/../../escape.mp4", "'..'"), ("/tmp/abs.mp4", "relative"),
    ("C:/videos/x.mp4", "drive"), ("C:x.mp4", "drive"), ("~/x.mp4", "relative"), ("..\\x.mp4", "backslash"),
    ("x.avi", "ending in .mp4"), ("sub/", "ending in .mp4"), (".mp4", "ending in .mp4"), ("a\x00.mp4", "control"),
])
def test_bad_output_names_are_refused(name, why):
    with pytest.raises(InputError) as info:
        sanitise_output(name, "job")
    assert info.value.code == "bad_output" and why in str(info.value)


def test_output_names_are_normalised():
    assert sanitise_output(None, "job") == "job.mp4"
    assert sanitise_output("  ", "job") == "job.mp4"
    assert sanitise_output("./a/./b.MP4", "job") == "a/b.MP4"
    assert sanitise_output("x..y.mp4", "job") == "x..y.mp4"  # dots inside a name are fine


def test_per_row_errors_have_reason_codes_and_name_the_input(files):
    root, ref, video = files
    rows = [
        ("steps0", f"{ref},{video},0,,,,", "bad_value", "steps: must be in [1, 1000], got 0"),
        ("stepsx", f"{ref},{video},abc,,,,", "bad_value", "steps: expected a whole number, got 'abc'"),
        ("guid", f"{ref},{video},,nan,,,", "bad_value", "guidance"),
        ("person", f"{ref},{video},,,1.5,,", "bad_value", "person: expected a whole number"),
        ("size", f"{ref},{video},,,,60,", "bad_value", "size: must be a multiple of 8"),
        ("noref", f"media/none.png,{video},,,,,", "not_found", f"reference {root}/media/none.png: file not found"),
        ("novid", f"{ref},{root},,,,,", "not_found", "is not a file"),
        ("escape", f"{ref},{video},,,,,../../x.mp4", "bad_output", "'..'"),
        ("same1", f"{ref},{video},,,,,same.mp4", "bad_output", "also the output of jobs same1, same2"),
        ("same2", f"{ref},{video},,,,,SAME.mp4", "bad_output", "also the output of jobs same1, same2"),
        ("good", f"{ref},{video},,,,,", "", ""),
    ]
    text = "job_id,reference,video,steps,guidance,person,size,output\n" + "".join(f"{j},{r}\n" for j, r, _, _ in rows)
    tasks = _plan(_csv(root / "jobs.csv", text))
    for job_id, _, reason, detail in rows:
        task = tasks[job_id]
        assert task.reason == reason, (job_id, task.detail)
        assert detail in task.detail and (not reason or task.detail.startswith(f"job {job_id}: ")), task.detail


def test_unsafe_job_ids_get_safe_distinct_file_names(files):
    assert safe_stem("clip-01.v2") == "clip-01.v2"
    for job_id in ("a/b", "../x", "a b", ".hidden", "ünï", "x" * 150):
        stem = safe_stem(job_id)
        assert "/" not in stem and not stem.startswith(".") and len(stem) <= 80 and stem != job_id
    assert safe_stem("a/b") != safe_stem("a:b")
    root, ref, video = files
    path = _csv(root / "jobs.csv", f"job_id,reference,video\nA,{ref},{video}\na,{ref},{video}\n../up,{ref},{video}\n")
    tasks = _plan(path)
    assert tasks["A"].stem.lower() != tasks["a"].stem.lower() and tasks["a"].ok and tasks["A"].ok
    assert tasks["../up"].ok and tasks["../up"].output == tasks["../up"].stem + ".mp4"


def test_inside_refuses_a_symlink_out_of_the_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "out" / "link")
    assert inside(tmp_path / "out", "a/b.mp4") == (tmp_path / "out" / "a" / "b.mp4").resolve()
    with pytest.raises(InputError, match="outside"):
        inside(tmp_path / "out", "link/x.mp4")


def test_job_key_follows_row_inputs_and_model(files, tmp_path):
    _, ref, video = files
    task = BatchTask(job_id="a", row=1, reference=str(ref), video=str(video), output="a.mp4")
    digests = {str(ref): "r1", str(video): "v1"}
    shared = {"model": model_identity(None, "tiny"), "settings": "s"}
    key = job_key(task, digests, shared)
    assert key == job_key(BatchTask(job_id="a", row=5, reference=str(ref), video=str(video), output="a.mp4"),
                          digests, shared)  # the row number is not part of it
    changed = [
        job_key(BatchTask(job_id="a", row=1, reference=str(ref), video=str(video), output="a.mp4", steps=3),
                digests, shared),
        job_key(task, {**digests, str(video): "v2"}, shared),
        job_key(task, digests, {**shared, "model": model_identity(str(tmp_path), None)}),
        job_key(BatchTask(job_id="a", row=1, reference=str(ref), video=str(video), output="b.mp4"), digests, shared),
    ]
    assert key not in changed and len(set(changed)) == len(changed)
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    first = model_identity(str(weights), None)
    (weights / "config.json").write_text('{"a": 1}')
    assert model_identity(str(weights), None) != first
    assert model_identity("owner/model", None) == {"weights": "hub:owner/model"}
