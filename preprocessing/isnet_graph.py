"""Load-time rewrites of the released ISNet ONNX graphs, so one model file serves every device and size.

- ``float32_graph``: the fp16 release (``isnet-fp16.onnx``) with every fp16 weight, constant and cast
  turned to fp32. onnxruntime's CPU provider has no fast fp16 convolution (on CPU the quint8 release
  on the torch-int8 engine, ``int8_graph``, is faster still). On CUDA the fp16 graph is kept as
  released.
- ``resizable_graph``: the releases bake the native 1024x1024 size into every ``Resize`` node, either
  as a ``sizes`` initializer (quint8) or as ``Concat(Shape(x)[:2], constant)`` (fp16). Each becomes a
  ``scales`` initializer and the input's H, W become free, which is exact for sides that are
  multiples of 128.
"""

from __future__ import annotations

import numpy as np

ISNET_NATIVE = 1024


def has_fp16_weights(model) -> bool:
    from onnx import TensorProto

    return any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)


def float32_graph(model):
    """Turn an fp16 graph (fp32 input and output, fp16 inside) into an fp32 one, in place."""
    from onnx import TensorProto, numpy_helper

    def to_fp32(tensor):
        if tensor.data_type == TensorProto.FLOAT16:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))

    for tensor in model.graph.initializer:
        to_fp32(tensor)
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.HasField("t"):
                to_fp32(attr.t)
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16:
                attr.i = TensorProto.FLOAT
    del model.graph.value_info[:]
    return model


def _sort_nodes(model) -> None:
    """Order the nodes topologically (the fp16 release lists some consumers before their producers,
    which onnxruntime accepts but shape inference does not)."""
    ready = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    pending, ordered = list(model.graph.node), []
    while pending:
        left = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                left.append(node)
        if len(left) == len(pending):
            raise ValueError(f"ONNX graph has a cycle or a missing input at node {left[0].name}")
        pending = left
    del model.graph.node[:]
    model.graph.node.extend(ordered)


def _known_shapes(model) -> dict[str, list[int]]:
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dims and all(dims):
            shapes[vi.name] = dims
    return shapes


def _constant(name: str, inits: dict, producers: dict) -> np.ndarray | None:
    """The value of ``name`` when it is an initializer or a Constant node's output, else None."""
    from onnx import numpy_helper

    if name in inits:
        return numpy_helper.to_array(inits[name])
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        return numpy_helper.to_array(node.attribute[0].t)
    return None


def _target_sizes(node, src: list[int], inits: dict, producers: dict) -> np.ndarray | None:
    """The full output size of a size-valued Resize at the native input: a constant, or the source's
    leading dims concatenated with a constant (the fp16 release's form)."""
    sizes = _constant(node.input[3], inits, producers)
    if sizes is not None:
        return sizes.astype(np.float64)
    concat = producers.get(node.input[3])
    if concat is None or concat.op_type != "Concat" or len(concat.input) != 2:
        return None
    tail = _constant(concat.input[1], inits, producers)
    if tail is None:
        return None
    return np.asarray(list(src[: len(src) - len(tail)]) + list(tail), np.float64)


def _drop_dead_nodes(model) -> None:
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for node in model.graph.node for i in node.input} | outputs
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            model.graph.node.remove(node)
    used = {i for node in model.graph.node for i in node.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)


def resizable_graph(model, source: str = "ISNet"):
    """Size-valued Resize nodes turned into scale-valued ones and the input's H, W freed, in place.

    Shape inference cannot see through a Resize whose size is computed (the fp16 release), so the
    nodes are rewritten in passes: each pass converts those whose input shape is known, which makes
    the shapes behind them known for the next."""
    from onnx import numpy_helper

    _sort_nodes(model)
    while True:
        pending = [n for n in model.graph.node if n.op_type == "Resize" and len(n.input) >= 4 and n.input[3]]
        if not pending:
            break
        shapes = _known_shapes(model)
        inits = {i.name: i for i in model.graph.initializer}
        producers = {o: n for n in model.graph.node for o in n.output}
        done = 0
        for node in pending:
            src = shapes.get(node.input[0])
            sizes = None if src is None else _target_sizes(node, src, inits, producers)
            if sizes is None:
                continue
            name = f"{node.name}_scales"
            scales = (sizes / np.asarray(src, np.float64)).astype(np.float32)
            model.graph.initializer.append(numpy_helper.from_array(scales, name))
            del node.input[3]
            node.input[2] = name
            done += 1
        if not done:
            raise ValueError(f"{source}: cannot read the input shape or target size of Resize node {pending[0].name}")
    _drop_dead_nodes(model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for k, out in enumerate(model.graph.output):
        for j, d in enumerate(out.type.tensor_type.shape.dim[2:]):
            d.dim_param = f"out{k}_{j}"
    del model.graph.value_info[:]
    return model


def load_isnet_graph(model_path: str, device_type: str, resizable: bool):
    """``(model, rewritten)``: the graph to run on ``device_type`` as an ONNX ModelProto (fp32 on CPU
    for an fp16 release; scale-valued Resize when ``resizable``), and whether it differs from the file."""
    import onnx

    model = onnx.load(model_path)
    to_fp32 = device_type != "cuda" and has_fp16_weights(model)
    if to_fp32:
        float32_graph(model)
    if resizable:
        resizable_graph(model, model_path)
    return model, to_fp32 or resizable


def isnet_graph(model_path: str, device_type: str, resizable: bool) -> bytes | str:
    """The graph to load into onnxruntime: the file itself when no rewrite is needed, else the
    rewritten graph's bytes (see ``load_isnet_graph``)."""
    model, rewritten = load_isnet_graph(model_path, device_type, resizable)
    return model.SerializeToString() if rewritten else model_path
