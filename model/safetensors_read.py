"""Read a safetensors file into tensors of their own, with plain reads instead of a memory map.

``safetensors.torch.load_file`` returns views of a memory map of the file: every page it touches counts
in the process's resident memory until the last tensor of the file is gone. Models that take the
checkpoint's tensors (``official.build_and_load``) must copy them anyway (the views sit 8 bytes off the
alignment kernels expect), so with the map the weights are resident twice while a model loads. Reading
each tensor straight into its own allocation keeps one copy, aligned, and is one pass over the file.

The format: an 8-byte little-endian header length, a JSON header (``name -> {dtype, shape,
data_offsets}``, optional ``__metadata__``), then the data; offsets are relative to the data's start.
"""

import json
import math
import struct
from pathlib import Path

import torch

from anycharv.errors import WeightsError

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_MAX_HEADER = 100 * 2**20  # the format's own limit


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``path`` in a fresh CPU allocation; a malformed file raises ``WeightsError``
    naming the file and what is wrong with it."""
    path = Path(path)
    with open(path, "rb") as f:
        size = path.stat().st_size
        header, data_start = _header(f, size, path)
        tensors = {}
        for name, (dtype, shape, begin, end) in sorted(header.items(), key=lambda item: item[1][2]):
            if data_start + end > size:
                raise WeightsError(f"{path}: tensor {name} ends past the end of the file (truncated?)")
            buffer = torch.empty(end - begin, dtype=torch.uint8)
            f.seek(data_start + begin)
            if end > begin and f.readinto(memoryview(buffer.numpy())) != end - begin:
                raise WeightsError(f"{path}: tensor {name}: short read (truncated?)")
            tensors[name] = buffer.view(dtype).reshape(shape)
    return tensors


def _header(f, size: int, path: Path) -> tuple[dict[str, tuple[torch.dtype, list[int], int, int]], int]:
    """name -> (dtype, shape, begin, end), and where the data starts."""
    (length,) = struct.unpack("<Q", _exactly(f, 8, path))
    if length > min(_MAX_HEADER, size - 8):
        raise WeightsError(f"{path}: not a safetensors file (header length {length} for a {size}-byte file)")
    try:
        raw = json.loads(_exactly(f, length, path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: not a safetensors file (header is not JSON: {exc})") from exc
    if not isinstance(raw, dict):
        raise WeightsError(f"{path}: not a safetensors file (header is not an object)")
    entries = {}
    for name, info in raw.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = _DTYPES[info["dtype"]], [int(n) for n in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{path}: tensor {name}: bad header entry {info!r} ({exc!r})") from exc
        nbytes = math.prod(shape) * dtype.itemsize
        if not 0 <= begin <= end or end - begin != nbytes:
            raise WeightsError(f"{path}: tensor {name}: offsets {begin}..{end} do not hold {dtype} {shape}")
        entries[name] = (dtype, shape, begin, end)
    return entries, 8 + length


def _exactly(f, count: int, path: Path) -> bytes:
    data = f.read(count)
    if len(data) != count:
        raise WeightsError(f"{path}: not a safetensors file (truncated header)")
    return data
