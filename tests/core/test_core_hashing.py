"""``anycharv.hashing``: the file hash behind asset checksums and clip keys is the plain sha256 of
the bytes, whatever the file's size relative to the read block."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from anycharv.hashing import sha256_file


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (5 << 19) + 7])
def test_sha256_file_equals_sha256_of_the_bytes(tmp_path, size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(str(path)) == sha256_file(path)


def test_one_changed_byte_changes_the_hash(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    data = bytearray(range(256)) * 8192  # 2 MiB: the change lands in the second block
    a.write_bytes(bytes(data))
    data[(1 << 20) + 3] ^= 1
    b.write_bytes(bytes(data))
    assert sha256_file(a) != sha256_file(b)


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "absent.bin")
