"""The torch-int8 engine for the quantized ISNet graph (``int8_graph``) against onnxruntime: each
operator on small graphs built with onnx.helper (bit for bit), then the real ``isnet.onnx`` on real
images, and the masker's engine choice."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from anycharv.assets import asset_path
from anycharv.preprocessing import int8_graph
from anycharv.preprocessing.config import MaskConfig
from anycharv.preprocessing.fine_mask import IsnetMasker, isnet_engine
from anycharv.preprocessing.int8_graph import Int8Graph, UnsupportedGraph
from anycharv.preprocessing.isnet_graph import isnet_graph, load_isnet_graph


def _model(nodes, inits, outputs, shape=None):
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(n, t, None) for n, t in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


def _ort(model, x):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def _quantized_conv_model(cin, cout, kernel, stride, dilation, pad, seed, fused):
    """x -> DynamicQuantizeLinear -> ConvInteger (random uint8 weights and zero point) [-> Cast -> Mul by the
    scale product -> Add bias -> Relu]."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.integers(0, 256, (cout, cin, kernel, kernel), dtype=np.uint8), "w"),
             numpy_helper.from_array(np.array(rng.integers(0, 256), np.uint8), "wz")]
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "qs", "qz"]),
             helper.make_node("ConvInteger", ["q", "w", "qz", "wz"], ["acc"], kernel_shape=[kernel, kernel],
                              strides=[stride, stride], dilations=[dilation, dilation], pads=[pad] * 4)]
    if not fused:
        return _model(nodes, inits, [("acc", TensorProto.INT32)])
    inits += [numpy_helper.from_array(np.array(0.0123, np.float32), "ws"),
              numpy_helper.from_array(rng.normal(size=(1, cout, 1, 1)).astype(np.float32), "bias")]
    nodes += [helper.make_node("Mul", ["qs", "ws"], ["s"]), helper.make_node("Cast", ["acc"], ["accf"], to=1),
              helper.make_node("Mul", ["accf", "s"], ["scaled"]), helper.make_node("Add", ["scaled", "bias"], ["b"]),
              helper.make_node("Relu", ["b"], ["y"])]
    return _model(nodes, inits, [("y", TensorProto.FLOAT)])


CONVS = {  # cin, cout, kernel, stride, dilation, pad, h, w
    "3 channels, stride 2 (byte-wise im2col)": (3, 16, 3, 2, 1, 1, 17, 13),
    "12 channels, dilation 2 (4-byte words)": (12, 24, 3, 1, 2, 2, 11, 9),
    "64 channels (8-byte words)": (64, 32, 3, 1, 1, 1, 12, 10),
    "300 channels (int32 channel sums)": (300, 16, 3, 1, 1, 1, 6, 7),
    "one output (exact fp32 path)": (64, 1, 3, 1, 1, 1, 9, 8),
    "1x1, no padding": (16, 40, 1, 1, 1, 0, 5, 6),
    "dilation 8 wider than the input": (16, 16, 3, 1, 8, 8, 6, 6),
}


@pytest.mark.parametrize("spec", list(CONVS.values()), ids=list(CONVS))
@pytest.mark.parametrize("relu_input", [False, True], ids=["signed", "relu"])
def test_conv_integer_equals_onnxruntime_bit_for_bit(spec, relu_input):
    cin, cout, kernel, stride, dilation, pad, h, w = spec
    model = _quantized_conv_model(cin, cout, kernel, stride, dilation, pad, seed=cin + cout, fused=False)
    x = np.random.default_rng(1).normal(size=(2, cin, h, w)).astype(np.float32)
    if relu_input:  # zero point 0: every tap is shifted by the full 128
        x = np.maximum(x, 0)
    [expected] = _ort(model, x)
    got = Int8Graph(model).run(x)["acc"]
    assert got.dtype == np.int32 and np.array_equal(got, expected)


def test_im2col_bands_change_nothing(monkeypatch):
    model = _quantized_conv_model(64, 32, 3, 1, 1, 1, seed=5, fused=False)
    x = np.random.default_rng(2).normal(size=(1, 64, 20, 18)).astype(np.float32)
    whole = Int8Graph(model).run(x)["acc"]
    monkeypatch.setattr(int8_graph, "BAND_BYTES", 1)  # one output row per band
    assert np.array_equal(Int8Graph(model).run(x)["acc"], whole)
    assert np.array_equal(whole, _ort(model, x)[0])


def test_fused_scale_bias_relu_equals_onnxruntime():
    model = _quantized_conv_model(32, 48, 3, 1, 1, 1, seed=3, fused=True)
    graph = Int8Graph(model)
    assert [op for op, *_ in graph.program] == ["DynamicQuantizeLinear", "Mul", "QuantizedConv"]
    assert graph.program[-1][3].relu
    x = np.random.default_rng(4).normal(size=(1, 32, 15, 15)).astype(np.float32)
    assert np.array_equal(graph.run(x)["y"], _ort(model, x)[0])


@pytest.mark.parametrize("kind", ["signed", "relu", "zeros", "positive constant", "large"])
def test_dynamic_quantize_equals_onnxruntime(kind):
    x = np.random.default_rng(6).normal(size=(1, 8, 33, 31)).astype(np.float32)
    x = {"signed": x, "relu": np.maximum(x, 0), "zeros": np.zeros_like(x), "positive constant": np.full_like(x, 0.7),
         "large": x * 1e4}[kind]
    model = _model([helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])], [],
                   [("q", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8)])
    q, scale, zero = _ort(model, x)
    shifted, our_scale, our_zero = int8_graph.dynamic_quantize(torch.from_numpy(x))
    assert np.array_equal(shifted.numpy().astype(np.int16) + 128, q.astype(np.int16))
    assert float(our_scale) == float(scale) and our_zero == int(zero)


@pytest.mark.parametrize("shape, scales, sizes", [
    ((1, 6, 8, 8), (2.0, 2.0), None), ((2, 5, 7, 5), (2.0, 2.0), None), ((1, 4, 4, 6), (4.0, 4.0), None),
    ((1, 3, 3, 3), (32.0, 32.0), None), ((1, 4, 6, 5), None, (10, 7)), ((1, 4, 9, 9), (1.0, 1.0), None),
])
def test_resize_equals_onnxruntime(shape, scales, sizes):
    """x2 upsampling takes the phase path, the rest the gathering one; both must give onnxruntime's
    values, not merely close ones (a last-bit difference moves quantization steps further on)."""
    x = np.random.default_rng(7).normal(size=shape).astype(np.float32)
    if sizes is None:
        inits = [numpy_helper.from_array(np.array([1, 1, *scales], np.float32), "scales")]
        inputs = ["x", "", "scales"]
    else:
        inits = [numpy_helper.from_array(np.array([shape[0], shape[1], *sizes], np.int64), "sizes")]
        inputs = ["x", "", "", "sizes"]
    node = helper.make_node("Resize", inputs, ["y"], mode="linear", coordinate_transformation_mode="half_pixel")
    model = _model([node], inits, [("y", TensorProto.FLOAT)])
    assert np.array_equal(Int8Graph(model).run(x)["y"], _ort(model, x)[0])


def test_an_unsupported_operator_is_named():
    model = _model([helper.make_node("Softmax", ["x"], ["y"], name="head/softmax")], [], [("y", TensorProto.FLOAT)])
    with pytest.raises(UnsupportedGraph, match="Softmax.*head/softmax"):
        Int8Graph(model, source="my.onnx")


def _image(name: str, side: int) -> np.ndarray:
    with Image.open(asset_path(name)) as im:
        rgb = np.asarray(im.convert("RGB").resize((side, side)), dtype=np.float32)
    return (rgb / 255.0 - 0.5).transpose(2, 0, 1)[None]


@pytest.mark.parametrize("side", [256, 1024])
def test_real_isnet_gives_onnxruntimes_output(side):
    """The released quantized graph, resizable at 256 and as released (size-valued Resize) at 1024."""
    path = str(asset_path("isnet.onnx"))
    graph = isnet_graph(path, "cpu", resizable=side != 1024)
    ours = Int8Graph(load_isnet_graph(path, "cpu", resizable=side != 1024)[0], ["output"])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    for name in ("astronaut.png", "zidane.jpg"):
        x = _image(name, side)
        expected = sess.run(["output"], {"input": x})[0]
        got = ours.run(x)["output"]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-5, name
        assert np.array_equal(got > 0.5, expected > 0.5), name
        assert (expected > 0.5).mean() > 0.05  # a person was found, so the comparison means something


def test_engine_choice():
    cfg = MaskConfig()
    assert isnet_engine(cfg, "cpu", quantized=True) == "torch-int8"
    assert isnet_engine(cfg, "cpu", quantized=False) == "onnxruntime"
    assert isnet_engine(cfg, "cuda", quantized=True) == "onnxruntime"
    assert isnet_engine(cfg.model_copy(update={"engine": "onnxruntime"}), "cpu", quantized=True) == "onnxruntime"


def test_masker_engines_agree_and_a_wrong_pairing_is_refused():
    base = MaskConfig(size=256, device="cpu")
    auto, onnx_rt = IsnetMasker(base), IsnetMasker(base.model_copy(update={"engine": "onnxruntime"}))
    assert (auto.engine, onnx_rt.engine) == ("torch-int8", "onnxruntime")
    with Image.open(asset_path("zidane.jpg")) as im:
        crop = np.asarray(im.convert("RGB"))[100:700, 400:900]
    a, b = auto.probability(crop), onnx_rt.probability(crop)
    assert a.shape == crop.shape[:2] and np.abs(a - b).max() < 1e-5 and (a > 0.5).mean() > 0.05
    with pytest.raises(ValueError, match="torch-int8.*isnet-fp16.onnx.*not quantized"):
        IsnetMasker(base.model_copy(update={"engine": "torch-int8", "weights": "isnet-fp16.onnx"}))
