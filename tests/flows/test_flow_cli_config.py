"""``anycharv preprocess`` argument and config handling: bad keys and values are readable errors
that name them, before any Prefect or Ray work starts."""

from __future__ import annotations

import pytest

from anycharv.cli import main
from anycharv.commands.preprocess import load_job


@pytest.mark.parametrize("override, expected", [
    ("detect.conff=0.3", "unknown key 'conff' under detect"),
    ("runtime.num_worker=2", "unknown key 'num_worker' under runtime"),
    ("detect.conf=2", "detect.conf"),
    ("runtime.num_workers=0", "runtime.num_workers"),
    ("detect.conf", "expected key.sub=value"),
    ("detect.weights=nosuch.pt", "detect.weights: Value error, nosuch.pt: no such file"),  # at load, not in setup
    ("mask.weights=/nowhere/isnet.onnx", "mask.weights"),
    ("pose.backend=dwpose", "pose.dwpose_dir: required"),
])
def test_flow_cli_bad_override_is_named(override, expected, tmp_path, capsys):
    code = main(["preprocess", "--input", str(tmp_path / "v.mp4"), "--output", str(tmp_path / "out"), override])
    err = capsys.readouterr().err
    assert code == 1 and expected in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing started


def test_flow_cli_bad_config_file_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("detect:\n  imgsz: [1, 2\n")
    code = main(["preprocess", "-i", "x.mp4", "-o", str(tmp_path / "out"), "--config", str(bad)])
    err = capsys.readouterr().err
    assert code == 1 and str(bad) in err and "invalid YAML" in err


def test_flow_cli_overrides_reach_both_sections(tmp_path):
    job = load_job(None, ["detect.conf=0.3", "runtime.num_workers=2", "runtime.stage_workers.pose=3"], "auto")
    assert job.detect.conf == 0.3 and job.runtime.num_workers == 2 and job.runtime.stage_workers == {"pose": 3}
    assert job.runtime.ray_address == "auto"
    # Runtime settings never change what is computed, so they never change clip ids.
    assert job.content_hash() == load_job(None, ["detect.conf=0.3"]).content_hash()
    assert job.content_hash() != load_job(None, ["detect.conf=0.4"]).content_hash()
    # The stages see the runtime device where their own is 'auto'.
    cfg = load_job(None, ["runtime.device=cpu", "mask.device=cuda:1"]).stage_config()
    assert (cfg.detect.device, cfg.pose.device, cfg.mask.device) == ("cpu", "cpu", "cuda:1")


def test_flow_parameters_render_as_a_typed_form():
    from prefect.utilities.callables import parameter_schema

    from anycharv.flows.preprocess import preprocess

    schema = parameter_schema(preprocess.fn).model_dump()
    assert list(schema["properties"]) == ["inputs", "output", "config"] and schema["required"] == ["inputs", "output"]
    assert schema["properties"]["inputs"]["type"] == "array"
    defs = schema["definitions"]
    assert {"PreprocessJob", "RuntimeConfig", "DetectConfig", "MaskConfig"} <= set(defs)
    assert defs["DetectConfig"]["properties"]["conf"]["maximum"] == 1
    assert "runtime" in defs["PreprocessJob"]["properties"]
