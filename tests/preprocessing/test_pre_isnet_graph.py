"""The load-time ISNet graph rewrites, on the real released models: the fp16 release run as fp32 on
CPU, and both releases taking inputs other than 1024x1024."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from PIL import Image

from anycharv.assets import asset_path
from anycharv.preprocessing.isnet_graph import has_fp16_weights, isnet_graph


def _session(model):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _astronaut(side: int) -> np.ndarray:
    with Image.open(asset_path("astronaut.png")) as im:
        rgb = np.asarray(im.convert("RGB").resize((side, side)), dtype=np.float32)
    return (rgb / 255.0 - 0.5).transpose(2, 0, 1)[None]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def fp16_path() -> str:
    return str(asset_path("isnet-fp16.onnx"))


def test_fp16_release_becomes_fp32_on_cpu_and_keeps_its_output(fp16_path):
    rewritten = isnet_graph(fp16_path, "cpu", resizable=False)
    model = onnx.load_from_string(rewritten)
    assert not has_fp16_weights(model)
    casts = [a.i for n in model.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"]
    assert TensorProto.FLOAT16 not in casts
    x = _astronaut(1024)
    released = _session(fp16_path).run(None, {"input": x})[0][0, 0]
    ours = _session(rewritten).run(None, {"input": x})[0][0, 0]
    assert np.abs(released - ours).mean() < 5e-3
    assert _iou(released > 0.5, ours > 0.5) > 0.99


def test_cuda_keeps_the_released_graph(fp16_path):
    assert isnet_graph(fp16_path, "cuda", resizable=False) == fp16_path


@pytest.mark.parametrize("name", ["isnet.onnx", "isnet-fp16.onnx"])
def test_both_releases_become_resizable_exactly(name):
    """At 1024 the rewritten graph gives the released output; at 512 it runs and finds the person
    (ISNet's masks do depend on the input size, so 512 is not compared with 1024)."""
    path = str(asset_path(name))
    x = _astronaut(1024)
    native = _session(isnet_graph(path, "cpu", resizable=False)).run(None, {"input": x})[0][0, 0]
    resizable = _session(isnet_graph(path, "cpu", resizable=True))
    assert np.abs(resizable.run(None, {"input": x})[0][0, 0] - native).max() < 1e-4
    small = resizable.run(None, {"input": _astronaut(512)})[0][0, 0]
    assert small.shape == (512, 512)
    assert (small[300:450, 150:350] > 0.5).mean() > 0.9 and (small[:75, :75] > 0.5).mean() < 0.1
