"""Random DWPose-signature ONNX models built with onnx.helper (no DWPose weights exist offline).

Outputs are random low noise plus *planted* values that do not depend on the pixels (the input
only enters through ``0 * mean(input)``, which keeps the real input signature and a dynamic batch):
the tests then know exactly which detection / keypoint the decoders must recover.

- detector ``images [1,3,640,640] -> output [1,8400,85]`` (YOLOX raw head: xy offset, log wh, obj, 80 cls)
- pose ``input [N,3,384,288] -> simcc_x [N,133,576], simcc_y [N,133,768]``
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DET_ANCHORS = 8400
SIMCC_X, SIMCC_Y = 576, 768


def _const_plus_zero_input(input_name, input_shape, out_name, const, reshape_to, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", [input_name], ["m"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["m", "shape"], ["m3"]),
        helper.make_node("Mul", ["m3", "zero"], ["z"]),
    ]
    inits = [numpy_helper.from_array(np.asarray(reshape_to, np.int64), "shape"),
             numpy_helper.from_array(np.zeros(1, np.float32), "zero")]
    outputs = []
    for k, (name, value) in enumerate(zip(out_name, const)):
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"c{k}"))
        nodes.append(helper.make_node("Add", ["z", f"c{k}"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                     [input_shape[0]] + list(value.shape[1:])))
    graph = helper.make_graph(nodes, "fixture", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                                                               input_shape)],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def anchor_index(stride: int, gx: int, gy: int, size: int = 640) -> int:
    """Row of the YOLOX output for grid cell (gx, gy) of ``stride`` (strides 8, 16, 32 in order)."""
    offset = 0
    for s in (8, 16, 32):
        n = size // s
        if s == stride:
            return offset + gy * n + gx
        offset += n * n
    raise ValueError(stride)


def make_detector(path: Path, planted: list[tuple[int, int, int, float, float]], seed: int = 0) -> Path:
    """YOLOX-signature detector; ``planted`` = [(stride, gx, gy, w, h)] person boxes (input pixels)
    centred on their cells, with objectness and person score 0.9. Everything else scores < 0.05."""
    rng = np.random.default_rng(seed)
    out = rng.normal(0, 0.3, (1, DET_ANCHORS, 85)).astype(np.float32)
    out[..., 4:] = rng.uniform(0, 0.05, (1, DET_ANCHORS, 81))
    for stride, gx, gy, w, h in planted:
        row = anchor_index(stride, gx, gy)
        out[0, row, 0:2] = 0.5
        out[0, row, 2:4] = np.log([w / stride, h / stride])
        out[0, row, 4] = 0.9
        out[0, row, 5] = 0.9
    return _const_plus_zero_input("images", [1, 3, 640, 640], ["output"], [out], [-1, 1, 1], path)


def make_pose(path: Path, peaks: dict[int, tuple[int, int]], seed: int = 0) -> Path:
    """DWPose-signature pose model; ``peaks`` = {keypoint (0..132): (simcc_x bin, simcc_y bin)} get
    value 0.9, every other bin random in [0, 0.2)."""
    rng = np.random.default_rng(seed)
    sx = rng.uniform(0, 0.2, (1, 133, SIMCC_X)).astype(np.float32)
    sy = rng.uniform(0, 0.2, (1, 133, SIMCC_Y)).astype(np.float32)
    for k, (bx, by) in peaks.items():
        sx[0, k, bx] = 0.9
        sy[0, k, by] = 0.9
    return _const_plus_zero_input("input", ["N", 3, 384, 288], ["simcc_x", "simcc_y"], [sx, sy], [-1, 1, 1], path)
