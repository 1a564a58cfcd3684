"""``read_safetensors``: the library's tensors, in own aligned allocations; malformed files named."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from anycharv.errors import WeightsError
from anycharv.model.safetensors_read import read_safetensors


def test_same_tensors_as_the_library_each_aligned_in_its_own_storage(tmp_path):
    torch.manual_seed(0)
    state = {"w": torch.randn(7, 5), "b": torch.randn(3).to(torch.bfloat16), "h": torch.randn(2, 2).half(),
             "i": torch.arange(6, dtype=torch.int64).view(2, 3), "m": torch.tensor([True, False]),
             "empty": torch.zeros(0, 4), "s": torch.tensor(2.5)}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path), metadata={"format": "pt"})
    ours, lib = read_safetensors(path), load_file(str(path))
    assert ours.keys() == lib.keys()
    for key, value in lib.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape
        assert torch.equal(ours[key], value)
    storages = {t.untyped_storage().data_ptr() for t in ours.values() if t.numel()}
    assert len(storages) == sum(1 for t in ours.values() if t.numel())
    assert all(t.data_ptr() % 64 == 0 for t in ours.values() if t.numel())


def _write(path, header: dict, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize("case, match", [
    ("truncated_data", "ends past the end of the file"),
    ("bad_offsets", "do not hold"),
    ("bad_dtype", "bad header entry"),
    ("not_json", "header is not JSON"),
    ("huge_header", "header length"),
    ("tiny", "truncated header"),
])
def test_malformed_files_raise_naming_the_file(tmp_path, case, match):
    path = tmp_path / f"{case}.safetensors"
    entry = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    if case == "truncated_data":
        _write(path, {"t": entry}, b"\0" * 8)
    elif case == "bad_offsets":
        _write(path, {"t": {**entry, "data_offsets": [0, 12]}}, b"\0" * 16)
    elif case == "bad_dtype":
        _write(path, {"t": {**entry, "dtype": "F33"}}, b"\0" * 16)
    elif case == "not_json":
        path.write_bytes(struct.pack("<Q", 4) + b"{{{{" + b"\0" * 16)
    elif case == "huge_header":
        path.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    else:
        path.write_bytes(b"\1\2\3")
    with pytest.raises(WeightsError, match=match) as info:
        read_safetensors(path)
    assert str(path) in str(info.value)
