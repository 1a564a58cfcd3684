"""``anycharv.atomic`` on real files: the final name holds the old or the whole new content, never
a partial one, and no temporary file outlives a failed write."""

from __future__ import annotations

import json
import os

import pytest

from anycharv.atomic import TMP_PREFIX, atomic_open, atomic_path, atomic_write_bytes, atomic_write_json


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TMP_PREFIX))


def test_write_replaces_the_file_in_one_rename(tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old content")
    old_inode = path.stat().st_ino
    with open(path, "rb") as reader:  # opened before the write: it keeps the old file
        atomic_write_bytes(path, b"new content, longer than before")
        assert reader.read() == b"old content"
    assert path.read_bytes() == b"new content, longer than before"
    assert path.stat().st_ino != old_inode  # a new file moved over the name, not the old one rewritten
    assert _leftovers(tmp_path) == []


def test_final_name_keeps_the_old_content_until_the_block_ends(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_bytes(b"old")
    with atomic_open(path) as fh:
        fh.write(b"half of the new")
        fh.flush()
        assert path.read_bytes() == b"old"
        [temp] = _leftovers(tmp_path)
        assert (tmp_path / temp).read_bytes() == b"half of the new"
        fh.write(b" content")
    assert path.read_bytes() == b"half of the new content"
    assert _leftovers(tmp_path) == []


def test_failure_mid_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "clip.npz"
    path.write_bytes(b"complete old file")
    with pytest.raises(RuntimeError, match="disk went away"):
        with atomic_open(path) as fh:
            fh.write(b"partial")
            raise RuntimeError("disk went away")
    assert path.read_bytes() == b"complete old file"
    assert _leftovers(tmp_path) == []


def test_failure_mid_write_without_an_old_file_leaves_nothing(tmp_path):
    path = tmp_path / "new.json"
    with pytest.raises(TypeError):
        atomic_write_json(path, {"not serialisable": object()})
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_removes_the_temp(tmp_path):
    target = tmp_path / "taken"
    (target / "child").mkdir(parents=True)  # a non-empty folder cannot be replaced by a file
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"data")
    assert target.is_dir() and (target / "child").is_dir()
    assert _leftovers(tmp_path) == []


def test_temp_names_are_hidden_beside_the_target_and_unique(tmp_path):
    path = tmp_path / "sub" / "video.mp4"
    with atomic_path(path) as plain, atomic_path(path) as other:
        assert plain.parent == path.parent and path.parent.is_dir()  # parent folders are created
        assert plain.name.startswith(f"{TMP_PREFIX}video.mp4-") and plain.suffix == ".tmp"
        assert plain != other
        plain.write_bytes(b"a")
        other.write_bytes(b"b")
    with atomic_path(path, keep_suffix=True) as suffixed:
        assert suffixed.name.startswith(f"{TMP_PREFIX}video-") and suffixed.suffix == ".mp4"
        suffixed.write_bytes(b"c")
    assert path.read_bytes() == b"c"
    assert _leftovers(path.parent) == []


def test_json_is_sorted_and_round_trips(tmp_path):
    path = tmp_path / "run.json"
    atomic_write_json(path, {"b": [1, 2], "a": {"z": None}})
    text = path.read_text()
    assert json.loads(text) == {"a": {"z": None}, "b": [1, 2]}
    assert text.index('"a"') < text.index('"b"')
    assert os.stat(path).st_size == len(text.encode())
