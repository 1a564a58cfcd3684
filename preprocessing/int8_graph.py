"""The dynamically quantized ISNet graph (``isnet.onnx``) run by torch with int8 matrix products.

onnxruntime's CPU ``ConvInteger`` multiplies uint8 by uint8 at about fp32 speed; an int8 x int8
matrix product (``torch._int_mm``, oneDNN with VNNI / AMX) is 2-4x faster on the same core. Each
``ConvInteger`` here is an im2col over channels-last int8 activations and one such product, with
integer corrections for the zero points, so its int32 result equals onnxruntime's exactly. The
other nodes are computed as onnxruntime computes them (``DynamicQuantizeLinear`` divides and rounds
ties to even; ``Resize`` weighs the four neighbours in its order), and the tests hold the output
to onnxruntime's on real frames.

The zero-point algebra: with ``x, w`` in [0, 255], ``a = x - 128`` and ``b = w - 128`` fit int8 and

    sum (x - zx)(w - zw) = sum a b + (128 - zw) sum a + (128 - zx) sum b + K (128 - zx)(128 - zw)

over the K taps. ``sum a`` per output pixel is a window sum of the activations' per-pixel channel
sums; ``sum b`` per output channel is fixed. Padded taps hold ``zx`` (they add nothing), as
onnxruntime pads.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SUPPORTED_OPS = {"DynamicQuantizeLinear", "ConvInteger", "Cast", "Mul", "Add", "Relu", "Reshape", "Concat",
                 "MaxPool", "Resize", "Sigmoid"}
FLOAT_EXACT_TAPS = 1024  # K * 128 * 128 <= 2**24: an fp32 convolution of such taps sums integers exactly
FLOAT_PATH_CHANNELS = 8  # convolutions with this few outputs run as an (exact) fp32 convolution
BAND_BYTES = 1 << 21  # im2col built and multiplied in bands of output rows of about this size


class UnsupportedGraph(ValueError):
    """The ONNX graph uses an operator or attribute this runner does not implement."""


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@dataclass
class QuantizedConv:
    """The fixed half of one ConvInteger (and the float scale, bias and ReLU fused behind it)."""

    name: str
    matrix: object  # int8 (K, cout): b = w - 128, rows in (ky, kx, cin) order
    kernel_f32: object | None  # fp32 b (cout, cin, kh, kw) for the small-output path, else None
    beta: int  # 128 - zw
    sum_b: object  # int32 (cout,)
    taps: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    scale_name: str | None = None  # Mul by this (the product of the two scales) after the cast
    bias_name: str | None = None  # then Add this
    relu: bool = False

    @classmethod
    def from_node(cls, node, weight: np.ndarray, weight_zero: np.ndarray, source: str) -> QuantizedConv:
        import torch

        a = _attrs(node)
        if a.get("group", 1) != 1 or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedGraph(f"{source}: ConvInteger {node.name}: only group 1 and explicit pads are supported")
        if weight.dtype != np.uint8 or np.asarray(weight_zero).size != 1 or weight.ndim != 4:
            raise UnsupportedGraph(f"{source}: ConvInteger {node.name} needs 4-d uint8 weights with one zero point")
        cout, cin, kh, kw = weight.shape
        b = weight.astype(np.int16) - 128
        matrix = b.transpose(2, 3, 1, 0).reshape(kh * kw * cin, cout).astype(np.int8)
        taps = kh * kw * cin
        small = cout <= FLOAT_PATH_CHANNELS and taps <= FLOAT_EXACT_TAPS
        pads = list(a.get("pads", [0, 0, 0, 0]))
        return cls(name=node.name, matrix=torch.from_numpy(np.ascontiguousarray(matrix)),
                   kernel_f32=torch.from_numpy(b.astype(np.float32)) if small else None,
                   beta=128 - int(np.asarray(weight_zero).reshape(())),
                   sum_b=torch.from_numpy(b.reshape(cout, -1).sum(axis=1).astype(np.int32)), taps=taps,
                   kernel=(kh, kw), strides=tuple(a.get("strides", [1, 1])),
                   dilations=tuple(a.get("dilations", [1, 1])), pads=(pads[0], pads[1], pads[2], pads[3]))

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = self.kernel, self.strides, self.dilations, self.pads
        return (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1


def _window_sums(nhwc, conv: QuantizedConv, ho: int, wo: int):
    """sum a over each output pixel's taps (all channels), from the per-pixel channel sums of the
    padded activations: (N, Ho, Wo) int32."""
    import torch

    (kh, kw), (sh, sw), (dh, dw) = conv.kernel, conv.strides, conv.dilations
    # int16 holds the sum of up to 256 int8 values exactly, and sums them far faster than int32 here
    wide = torch.int16 if nhwc.shape[-1] <= 256 else torch.int32
    per_pixel = nhwc.to(wide).sum(dim=-1, dtype=wide).to(torch.int32)
    total = None
    for i in range(kh):
        for j in range(kw):
            part = per_pixel[:, i * dh: i * dh + (ho - 1) * sh + 1: sh, j * dw: j * dw + (wo - 1) * sw + 1: sw]
            total = part.clone() if total is None else total.add_(part)
    return total


def conv_integer(a, zero: int, conv: QuantizedConv):
    """int32 ConvInteger of shifted activations ``a = x - 128`` (int8, N C H W with channels-last
    memory) and input zero point ``zero``: a dense int32 (N, Ho, Wo, Cout) tensor."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = a.shape
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = conv.kernel, conv.strides, conv.dilations, conv.pads
    ho, wo = conv.out_size(h, w)
    cout = conv.matrix.shape[1]
    nhwc = a.permute(0, 2, 3, 1)
    if pt or pl or pb or pr:
        nhwc = F.pad(nhwc, (0, 0, pl, pr, pt, pb), value=zero - 128)
    nhwc = nhwc.contiguous()
    if conv.kernel_f32 is not None:
        prod = F.conv2d(nhwc.permute(0, 3, 1, 2).to(torch.float32), conv.kernel_f32, stride=conv.strides,
                        dilation=conv.dilations)
        prod = prod.permute(0, 2, 3, 1).to(torch.int32).reshape(n * ho * wo, cout)
    else:
        # copy taps as 8-byte words where the channels allow: the im2col copy is the costly part
        unit = 8 if c % 8 == 0 else (4 if c % 4 == 0 else 1)
        words = nhwc.view(torch.int64 if unit == 8 else torch.int32) if unit > 1 else nhwc
        s_n, s_h, s_w, _ = words.stride()
        prod = torch.empty((n * ho * wo, cout), dtype=torch.int32)
        band = max(1, BAND_BYTES // max(1, conv.taps * wo))
        for i in range(n):
            for r0 in range(0, ho, band):
                r1 = min(ho, r0 + band)
                view = words[i].as_strided((r1 - r0, wo, kh, kw, c // unit),
                                           (sh * s_h, sw * s_w, dh * s_h, dw * s_w, 1),
                                           words[i].storage_offset() + r0 * sh * s_h)
                cols = view.contiguous().view(torch.int8).reshape((r1 - r0) * wo, conv.taps)
                start = (i * ho + r0) * wo
                torch._int_mm(cols, conv.matrix, out=prod[start: start + (r1 - r0) * wo])
    alpha = 128 - zero
    prod.add_(_window_sums(nhwc, conv, ho, wo).reshape(-1, 1) * conv.beta)
    prod.add_(alpha * conv.sum_b + conv.taps * alpha * conv.beta)
    return prod.reshape(n, ho, wo, cout)


def dynamic_quantize(x):
    """ONNX DynamicQuantizeLinear as onnxruntime computes it (true division, ties to even), returning
    the activations shifted to int8 (``q - 128``), the scale (float32 0-d tensor) and the uint8 zero
    point (int)."""
    import torch

    lo, hi = torch.aminmax(_memory_view(x))
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = (hi - lo) / 255.0
    if float(scale) == 0.0:
        scale = torch.ones((), dtype=torch.float32)
    zero = int(torch.round(torch.clamp(0.0 - lo / scale, 0.0, 255.0)))
    q = torch.div(x, scale).round_().add_(zero - 128).clamp_(-128.0, 127.0)
    return q.to(torch.int8), scale, zero


def _memory_view(x):
    """``x`` flattened in memory order (no copy for contiguous or channels-last tensors)."""
    if x.dim() == 4 and not x.is_contiguous():
        return x.permute(0, 2, 3, 1).reshape(-1)
    return x.reshape(-1)


def _axis_weights(n_in: int, n_out: int, scale: float):
    """onnxruntime's linear half-pixel source indices and weights along one axis."""
    import torch

    src = (torch.arange(n_out, dtype=torch.float32) + 0.5) / torch.tensor(scale, dtype=torch.float32) - 0.5
    src = src.clamp(0.0, float(n_in - 1))
    lo = src.floor().to(torch.int64)
    hi = torch.clamp(lo + 1, max=n_in - 1)
    d_hi = src - lo.to(torch.float32)
    d_lo = 1.0 - d_hi
    same = lo == hi
    half = torch.full_like(d_hi, 0.5)
    return lo, hi, torch.where(same, half, d_lo), torch.where(same, half, d_hi)


def _residue_offsets(lo, hi, w_lo, w_hi, n_in: int, factor: int):
    """For an integer upsampling ``factor``: per output residue r, the offsets (o_lo, o_hi) with
    lo[f i + r] = clamp(i + o_lo) and hi likewise wherever the weight is nonzero; None when the
    indices follow no such pattern."""
    import torch

    base = torch.arange(n_in)
    offsets = []
    for r in range(factor):
        pair = []
        for idx, weight in ((lo[r::factor], w_lo[r::factor]), (hi[r::factor], w_hi[r::factor])):
            live = weight != 0
            match = [o for o in (-1, 0, 1) if len(idx) == n_in
                     and torch.equal(idx[live], torch.clamp(base + o, 0, n_in - 1)[live])]
            if not match:
                return None
            pair.append(match[0])
        offsets.append(tuple(pair))
    return offsets


@functools.lru_cache(maxsize=256)
def _axis_plan(n_in: int, n_out: int, scale: float):
    """Indices, weights and (for integer factors) phase offsets of one axis, computed once per size."""
    lo, hi, w_lo, w_hi = _axis_weights(n_in, n_out, scale)
    factor = n_out // n_in
    phases = _residue_offsets(lo, hi, w_lo, w_hi, n_in, factor) if n_out == factor * n_in else None
    return lo, hi, w_lo, w_hi, phases


def resize_linear(x, size: tuple[int, int], scales: tuple[float, float]):
    """Bilinear half-pixel resize of an N C H W (channels-last) float tensor with onnxruntime's
    arithmetic: ((w11 X11 + w21 X21) + w12 X12) + w22 X22, each weight the product of two axis
    weights. Integer upsampling (ISNet's x2) reads the neighbours as shifted slices of the
    edge-padded input, one output phase at a time, instead of gathering them."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    (y_lo, y_hi, dy_lo, dy_hi, phases_y), (x_lo, x_hi, dx_lo, dx_hi, phases_x) = (
        _axis_plan(h, size[0], scales[0]), _axis_plan(w, size[1], scales[1]))
    fy, fx = size[0] // h, size[1] // w
    nhwc = x.permute(0, 2, 3, 1)
    if phases_y is None or phases_x is None:
        top, bottom = nhwc.index_select(1, y_lo), nhwc.index_select(1, y_hi)
        out = (dy_lo[:, None] * dx_lo[None, :])[..., None] * top.index_select(2, x_lo)
        out += (dy_lo[:, None] * dx_hi[None, :])[..., None] * top.index_select(2, x_hi)
        out += (dy_hi[:, None] * dx_lo[None, :])[..., None] * bottom.index_select(2, x_lo)
        out += (dy_hi[:, None] * dx_hi[None, :])[..., None] * bottom.index_select(2, x_hi)
        return out.permute(0, 3, 1, 2)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate").permute(0, 2, 3, 1)
    out = torch.empty((n, h, fy, w, fx, c), dtype=x.dtype)

    def tap(oy: int, ox: int):
        return padded[:, 1 + oy: 1 + oy + h, 1 + ox: 1 + ox + w]

    for ry, (oy_lo, oy_hi) in enumerate(phases_y):
        wy_lo, wy_hi = dy_lo[ry::fy][:, None, None], dy_hi[ry::fy][:, None, None]
        for rx, (ox_lo, ox_hi) in enumerate(phases_x):
            wx_lo, wx_hi = dx_lo[rx::fx][None, :, None], dx_hi[rx::fx][None, :, None]
            acc = (wy_lo * wx_lo) * tap(oy_lo, ox_lo)
            acc += (wy_lo * wx_hi) * tap(oy_lo, ox_hi)
            acc += (wy_hi * wx_lo) * tap(oy_hi, ox_lo)
            acc += (wy_hi * wx_hi) * tap(oy_hi, ox_hi)
            out[:, :, ry, :, rx] = acc
    return out.reshape(n, h * fy, w * fx, c).permute(0, 3, 1, 2)


class Int8Graph:
    """A quantized ONNX graph (the ops in ``SUPPORTED_OPS``) as a torch program. ``run`` takes the
    input as a numpy float32 array and returns the requested outputs by name.

    At load: initializer-only Reshapes are folded, nodes no requested output needs are dropped, and
    each ``ConvInteger -> Cast -> Mul(scale) -> Add(bias) [-> Relu]`` chain becomes one step."""

    def __init__(self, model, outputs: list[str] | None = None, source: str = "ONNX graph"):
        from onnx import numpy_helper

        self.source = source
        self.input_name = model.graph.input[0].name
        self.output_names = list(outputs or [o.name for o in model.graph.output])
        arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        nodes = self._needed_nodes(model, set(self.output_names))
        for node in nodes:
            if node.op_type not in SUPPORTED_OPS:
                raise UnsupportedGraph(f"{source}: operator {node.op_type} (node {node.name}) is not supported")
        self.program = self._compile(nodes, arrays)
        self.consts = self._torch_constants(arrays)
        self.last_use = {}
        for k, (_, inputs, _, _) in enumerate(self.program):
            for name in inputs:
                self.last_use[name] = k

    @staticmethod
    def _needed_nodes(model, outputs: set[str]) -> list:
        producers = {o: n for n in model.graph.node for o in n.output}
        needed, stack = set(), list(outputs)
        while stack:
            name = stack.pop()
            if name in needed:
                continue
            needed.add(name)
            node = producers.get(name)
            if node is not None:
                stack.extend(i for i in node.input if i)
        return [n for n in model.graph.node if any(o in needed for o in n.output)]

    def _compile(self, nodes: list, arrays: dict) -> list:
        """Steps ``(op, input names, output names, payload)`` in graph order."""
        consumers: dict[str, list] = {}
        for node in nodes:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        keep = set(self.output_names)

        def only_consumer(name: str, op: str):
            users = consumers.get(name, [])
            return users[0] if len(users) == 1 and users[0].op_type == op and name not in keep else None

        for node in nodes:  # the shifted int8 activations and the int zero point are for ConvInteger only
            if node.op_type == "DynamicQuantizeLinear":
                users = consumers.get(node.output[0], []) + consumers.get(node.output[2], [])
                if any(u.op_type != "ConvInteger" for u in users) or keep & {node.output[0], node.output[2]}:
                    raise UnsupportedGraph(f"{self.source}: DynamicQuantizeLinear {node.name} feeds other "
                                           "operators than ConvInteger")
        program, fused, deferred = [], set(), {}
        for node in nodes:
            if id(node) in fused:  # a fused chain runs where its last node was: all its inputs exist by then
                if id(node) in deferred:
                    program.append(deferred.pop(id(node)))
                continue
            if node.op_type == "Reshape" and all(i in arrays for i in node.input):
                arrays[node.output[0]] = arrays[node.input[0]].reshape(arrays[node.input[1]])
                continue
            if node.op_type != "ConvInteger":
                program.append((node.op_type, list(node.input), list(node.output), (node.name, _attrs(node))))
                continue
            w, wz = node.input[1], node.input[3]
            if w not in arrays or wz not in arrays:
                raise UnsupportedGraph(f"{self.source}: ConvInteger {node.name} needs constant weights")
            conv = QuantizedConv.from_node(node, arrays[w], arrays[wz], self.source)
            inputs, last = [node.input[0], node.input[2]], node
            cast = only_consumer(node.output[0], "Cast")
            mul = cast is not None and _attrs(cast).get("to") == 1 and only_consumer(cast.output[0], "Mul")
            add = mul and only_consumer(mul.output[0], "Add")
            if add:
                scale = [i for i in mul.input if i != cast.output[0]]
                bias = [i for i in add.input if i != mul.output[0]]
                if len(scale) == 1 and len(bias) == 1 and bias[0] in arrays:
                    conv.scale_name, conv.bias_name = scale[0], bias[0]
                    inputs.append(scale[0])
                    fused.update({id(cast), id(mul), id(add)})
                    last = add
                    relu = only_consumer(add.output[0], "Relu")
                    if relu is not None:
                        conv.relu = True
                        fused.add(id(relu))
                        last = relu
            step = ("QuantizedConv", inputs, [last.output[0]], conv)
            if last is node:
                program.append(step)
            else:
                deferred[id(last)] = step
        return program

    @staticmethod
    def _torch_constants(arrays: dict) -> dict:
        import torch

        consts = {}
        for name, value in arrays.items():
            if value.dtype in (np.float32, np.float64):
                consts[name] = torch.tensor(np.asarray(value, np.float32))
            elif value.dtype == np.int64:
                consts[name] = value
        return consts

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        keep = set(self.output_names)
        with torch.inference_mode():
            first = torch.from_numpy(np.ascontiguousarray(x, np.float32))
            env = {self.input_name: first.contiguous(memory_format=torch.channels_last)}
            for k, (op, inputs, outputs, payload) in enumerate(self.program):
                args = [env[i] if i in env else self.consts.get(i) for i in inputs]
                for name, value in zip(outputs, self._step(op, args, payload)):
                    env[name] = value
                for name in inputs:
                    if self.last_use.get(name) == k and name not in keep:
                        env.pop(name, None)
            return {name: env[name].contiguous().numpy() for name in self.output_names}

    def _step(self, op: str, args: list, payload) -> tuple:
        import torch
        import torch.nn.functional as F

        if op == "QuantizedConv":
            return (self._quantized_conv(args, payload),)
        name, attrs = payload
        if op == "DynamicQuantizeLinear":
            return dynamic_quantize(args[0])
        if op == "Cast":
            if attrs.get("to") != 1:
                raise UnsupportedGraph(f"{self.source}: Cast {name} to type {attrs.get('to')} is not supported")
            return (args[0].to(torch.float32),)
        if op == "Mul":
            return (args[0] * args[1],)
        if op == "Add":
            return (args[0] + args[1],)
        if op == "Relu":
            return (torch.relu(args[0]),)
        if op == "Sigmoid":
            return (torch.sigmoid(args[0]),)
        if op == "Reshape":
            return (args[0].reshape(tuple(int(v) for v in args[1])),)
        if op == "Concat":
            return (torch.cat(args, dim=attrs.get("axis", 0)),)
        if op == "MaxPool":
            if any(attrs.get("pads", [0])) or list(attrs.get("dilations", [1, 1])) != [1, 1]:
                raise UnsupportedGraph(f"{self.source}: MaxPool {name} with pads or dilations is not supported")
            kernel = attrs["kernel_shape"]
            ceil = bool(attrs.get("ceil_mode"))
            return (F.max_pool2d(args[0], kernel, attrs.get("strides", kernel), ceil_mode=ceil),)
        if op == "Resize":
            return (self._resize(name, attrs, args),)
        raise UnsupportedGraph(f"{self.source}: operator {op} (node {name}) is not supported")

    def _quantized_conv(self, args: list, conv: QuantizedConv):
        import torch

        a, zero = args[0], args[1]
        out = conv_integer(a, int(zero), conv)
        if conv.scale_name is None:
            return out.permute(0, 3, 1, 2)
        y = out.to(torch.float32)
        y.mul_(args[2].reshape(-1))  # one scale (or one per channel: the last axis here)
        y.add_(self.consts[conv.bias_name].reshape(-1))
        if conv.relu:
            y.relu_()
        return y.permute(0, 3, 1, 2)

    def _resize(self, name: str, attrs: dict, args: list):
        if attrs.get("mode") != b"linear" or attrs.get("coordinate_transformation_mode") != b"half_pixel":
            raise UnsupportedGraph(f"{self.source}: Resize {name}: only linear half-pixel resizing is supported")
        x = args[0]
        scales = args[2] if len(args) > 2 and args[2] is not None and args[2].numel() else None
        sizes = args[3] if len(args) > 3 else None
        h, w = x.shape[2], x.shape[3]
        if sizes is not None:
            size = (int(sizes[2]), int(sizes[3]))
            # onnxruntime's scale for a size: a float32 division
            factors = (float(np.float32(size[0]) / np.float32(h)), float(np.float32(size[1]) / np.float32(w)))
        elif scales is not None:
            factors = (float(scales[2]), float(scales[3]))
            size = (int(np.floor(h * factors[0])), int(np.floor(w * factors[1])))
        else:
            raise UnsupportedGraph(f"{self.source}: Resize {name} has neither scales nor sizes")
        return resize_linear(x, size, factors)
