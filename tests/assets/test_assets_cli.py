"""`anycharv assets` as a user runs it: a real subprocess of the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from anycharv.assets import ASSETS, cache_dir

ANYCHARV = Path(sys.executable).with_name("anycharv")


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(ANYCHARV), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_list_json_reports_the_default_cache():
    proc = _run("assets", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == list(ASSETS)
    for r in rows:
        assert set(r) >= {"name", "kind", "present", "path", "size", "license"}
        assert r["present"] is True, f"{r['name']} not cached: run `anycharv assets fetch`"
        assert Path(r["path"]) == cache_dir() / "assets" / r["name"]
        assert r["size"] == Path(r["path"]).stat().st_size


def test_list_table_and_cache_option(tmp_path):
    proc = _run("assets", "list", "--cache", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"cache: {tmp_path.resolve()}"
    assert lines[1].split() == ["NAME", "KIND", "SIZE", "STATUS", "LICENSE", "PATH"]
    assert len(lines) == 2 + len(ASSETS)
    assert all(" missing " in line for line in lines[2:])


def test_fetch_into_a_new_cache_prints_the_table(tmp_path):
    proc = _run("assets", "fetch", "zidane.jpg", "--cache", str(tmp_path / "c"))
    assert proc.returncode == 0, proc.stderr
    assert "fetching ultralytics==" in proc.stderr
    assert (tmp_path / "c" / "assets" / "zidane.jpg").stat().st_size == ASSETS["zidane.jpg"].size
    row = [line for line in proc.stdout.splitlines() if line.startswith("zidane.jpg")]
    assert len(row) == 1 and " ok " in row[0]

    again = _run("assets", "fetch", "zidane.jpg", "--cache", str(tmp_path / "c"))
    assert again.returncode == 0 and "zidane.jpg: cached, checksum ok" in again.stderr
    assert "fetching" not in again.stderr


def test_fetch_unknown_name_exits_1_with_message(tmp_path):
    proc = _run("assets", "fetch", "no-such-asset", "--cache", str(tmp_path))
    assert proc.returncode == 1
    assert "unknown asset 'no-such-asset'" in proc.stderr and "yolo11n-pose.pt" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "assets").exists()


def test_fetch_into_an_unusable_cache_exits_1(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    proc = _run("assets", "fetch", "zidane.jpg", "--cache", str(not_a_folder))
    assert proc.returncode == 1
    assert f"cannot write assets to the cache {not_a_folder}/assets" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_texts():
    for args in (("assets", "--help"), ("assets", "fetch", "--help"), ("assets", "list", "--help")):
        proc = _run(*args)
        assert proc.returncode == 0 and "ANYCHARV_CACHE" in proc.stdout
    bare = _run("assets")
    assert bare.returncode == 2 and "fetch" in bare.stdout and "list" in bare.stdout
