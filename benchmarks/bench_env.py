"""What every benchmark JSON records about where it ran: machine, accelerator and package versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def package_versions(names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine_info(packages: list[str]) -> dict:
    """Platform, CPU, cores usable by this process, memory, load, GPU (when present), versions."""
    import torch

    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        memory = None
    info = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)), "memory_gib": memory, "torch_threads": torch.get_num_threads(),
        "load_avg_1m_at_report": round(os.getloadavg()[0], 2), "cuda_available": torch.cuda.is_available(),
        "packages": package_versions(["anycharv", *packages]),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info
