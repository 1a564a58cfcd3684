"""Atomic publishing under SIGKILL: a process that rewrites a file in a loop is killed at random
moments; the file under its final name is always complete, and leftovers are hidden temp files that
``clean_stale`` removes."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time

from anycharv.atomic import TMP_PREFIX
from anycharv.preprocessing.finalize import OutputLayout, clean_stale

WRITER = r"""
import hashlib, os, sys
from anycharv.atomic import atomic_write_bytes
body = os.urandom(8 << 20)
i = 0
while True:
    i += 1
    head = str(i).encode()
    atomic_write_bytes(sys.argv[1], hashlib.sha256(head + body).hexdigest().encode() + b" " + head + b"\n" + body)
"""


def _complete(path) -> bool:
    data = path.read_bytes()
    line, body = data.split(b"\n", 1)
    digest, head = line.split(b" ")
    return hashlib.sha256(head + body).hexdigest().encode() == digest


def test_runner_atomic_write_survives_sigkill(tmp_path):
    layout = OutputLayout.create(tmp_path / "out")
    target = layout.manifest_path
    rng = random.Random(0)
    # Only ~1/3 of each writer cycle is inside the atomic write, so a fixed number of kills may miss
    # every write; keep killing (at least 6, at most 40 times) until one has landed mid-write.
    for kill in range(40):
        if kill >= 6 and any(layout.manifest_dir.glob(f"{TMP_PREFIX}*")):
            break
        before = target.stat().st_mtime_ns if target.exists() else None
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not target.exists() or target.stat().st_mtime_ns == before):
            time.sleep(0.01)  # until this writer has published once
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _complete(target), "a half-written file is visible under the final name"
    leftovers = len(list(layout.manifest_dir.glob(f"{TMP_PREFIX}*")))
    # The kills landed mid-write (temp files were left), yet only complete files were ever visible.
    assert leftovers >= 1
    assert clean_stale(layout) == leftovers
    assert sorted(p.name for p in layout.manifest_dir.iterdir()) == [target.name]
