"""The Prefect flow ``self_boost`` (real Prefect harness) and ``anycharv self-boost`` on bad input:
each is refused with a message naming it, before Prefect or Ray start and before anything is written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from anycharv.cli import main


def test_flow_generates_and_publishes_counts_and_previews(prefect_harness, cache_dir):
    import av
    from prefect.artifacts import Artifact

    from anycharv.config import load_config
    from anycharv.flows.self_boost import self_boost
    from anycharv.self_boost.config import BoostJob

    job = load_config(BoostJob, None, ["runtime.executor=local", "runtime.progress=false", "boost.steps=2"])
    result = self_boost(data=str(cache_dir), preset="tiny", config=job)
    assert result["generated"] == result["samples"] == 6 and result["output"] == str(cache_dir / "shards" / "boost")
    counts = {row["figure"]: row["value"] for row in json.loads(Artifact.get("self-boost-counts").data)}
    assert counts["generated"] == 6 and counts["split val"] == 2 and counts["clips_per_s"] > 0
    summary = Artifact.get("self-boost-summary").data
    assert "# Self-boost pairs" in summary and summary.count("data:image/png;base64,") == 2
    assert len(result["previews"]) == 2 and all(f"previews/{p.split('/')[-1]}" in summary for p in result["previews"])
    with av.open(result["previews"][0]) as video:
        stream = video.streams.video[0]
        frames = sum(1 for _ in video.decode(stream))
        assert float(stream.average_rate) == 30.0 and frames == 8
        assert (stream.width, stream.height) in ((3 * 32, 64), (3 * 64, 32))


def _fails(capsys, *argv: str) -> str:
    assert main(["self-boost", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("anycharv self-boost: error: ")
    return err


def test_cli_names_the_bad_input(capsys, cache_dir, prep_output, tiny_model_dir, tmp_path):
    err = _fails(capsys, "--data", str(prep_output), "--preset", "tiny")
    assert f"--data {prep_output}" in err and "not a latent cache" in err
    err = _fails(capsys, "--data", str(tmp_path / "missing"), "--preset", "tiny")
    assert "missing: no such folder" in err
    err = _fails(capsys, "--data", str(cache_dir), "--model", str(prep_output))
    assert f"--model {prep_output}" in err and "not a model folder" in err
    err = _fails(capsys, "--data", str(cache_dir), "--preset", "huge")
    assert "unknown preset 'huge'" in err
    err = _fails(capsys, "--data", str(cache_dir))
    assert "give --model DIR" in err
    err = _fails(capsys, "--data", str(cache_dir), "--preset", "tiny", "boost.stepz=3")
    assert "unknown key 'stepz'" in err

    wide = tmp_path / "wide-model"
    shutil.copytree(tiny_model_dir, wide)
    config = wide / "denoising_unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "cross_attention_dim": 768}))
    err = _fails(capsys, "--data", str(cache_dir), "--model", str(wide))
    assert str(wide) in err and "768-wide CLIP embeddings" in err and "32-wide" in err

    no_encoders = tmp_path / "no-encoders"
    shutil.copytree(cache_dir, no_encoders)
    (no_encoders / "encoders.json").unlink()
    err = _fails(capsys, "--data", str(no_encoders), "--preset", "tiny")
    assert str(no_encoders) in err and "encoders.json" in err
    assert not (cache_dir / "shards" / "boost").exists()


def test_cli_help_names_the_inputs():
    proc = subprocess.run([sys.executable, "-m", "anycharv.cli", "self-boost", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--data CACHE_DIR" in proc.stdout and "--model DIR" in proc.stdout


@pytest.mark.slow
def test_cli_generates_into_the_cache_then_a_rerun_does_no_work(cache_dir):
    cmd = [sys.executable, "-m", "anycharv.cli", "self-boost", "--data", str(cache_dir), "--preset", "tiny",
           "boost.steps=2", "runtime.executor=local", "runtime.progress=false"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "6 samples in 3 shards" in first.stdout and "6 clips generated" in first.stdout
    assert first.stdout.count("preview: ") == 2
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 clips generated, 6 reused" in again.stdout
