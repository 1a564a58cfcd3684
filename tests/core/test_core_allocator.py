"""keep_freed_memory: takes effect on glibc (this project's Linux targets), in a process of its own."""

from __future__ import annotations

import subprocess
import sys


def test_keep_freed_memory_takes_effect_on_glibc_and_the_process_still_works():
    code = ("import torch; from anycharv.allocator import keep_freed_memory; assert keep_freed_memory(); "
            "x = [torch.ones(8 << 20) for _ in range(3)]; del x; print(float(torch.ones(4 << 20).sum()))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(float(4 << 20))
