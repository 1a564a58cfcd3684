"""``anycharv pipeline``, ``retrain`` and ``serve`` refuse what cannot work before anything starts,
with an error naming the input; their help lists what they do."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from anycharv.assets import asset_path
from anycharv.cli import main


def _error(capsys, command: str) -> str:
    """The error on stderr: one line, or a config error's heading and one line per bad key."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[0].startswith(f"anycharv {command}: error:"), err
    assert len(err) == 1 or err[0].endswith("):") and all(line.startswith("  ") for line in err[1:]), err
    return "\n".join(err)


def test_pipeline_without_a_start_or_with_no_video_is_refused(tmp_path, capsys):
    ref = str(asset_path("astronaut.png"))
    assert main(["pipeline", "-i", str(asset_path("sports2d_demo.mp4")), "-r", ref, "-o", str(tmp_path / "a")]) == 1
    assert "--init" in _error(capsys, "pipeline")
    assert main(["pipeline", "-i", str(tmp_path / "none*.mp4"), "-r", ref, "-o", str(tmp_path / "b"),
                 "--preset", "tiny"]) == 1
    assert "matches no file" in _error(capsys, "pipeline")
    assert main(["pipeline", "-i", str(asset_path("sports2d_demo.mp4")), "-r", ref, "-o", str(tmp_path / "c"),
                 "--preset", "tiny", "two_stage.stage9.runtime.max_steps=1"]) == 1
    assert "stage9" in _error(capsys, "pipeline")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_retrain_with_a_bad_override_or_root_is_refused(tmp_path, capsys):
    video = str(asset_path("sports2d_demo.mp4"))
    assert main(["retrain", "-i", video, "--root", str(tmp_path / "r"), "--preset", "tiny",
                 "promotion.min_delta=-1"]) == 1
    assert "min_delta" in _error(capsys, "retrain")
    (tmp_path / "file").write_text("x")
    assert main(["retrain", "-i", video, "--root", str(tmp_path / "file"), "--preset", "tiny"]) == 1
    assert "not a folder" in _error(capsys, "retrain")


def test_serve_needs_a_prefect_server():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = "/nonexistent-prefect-home-for-test"  # no profile with an API URL
    result = subprocess.run([sys.executable, "-m", "anycharv.cli", "serve"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert "PREFECT_API_URL" in result.stderr and "prefect server start" in result.stderr


@pytest.mark.parametrize("command", ["pipeline", "retrain", "serve", "batch", "evaluate"])
def test_help_names_the_command(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert f"usage: anycharv {command}" in capsys.readouterr().out
