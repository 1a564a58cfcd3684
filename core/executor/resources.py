"""Fitting stage reservations into a cluster, and keeping a worker to its CPU share."""

from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

from anycharv.executor.config import ExecutorConfig
from anycharv.executor.stage import Stage

log = logging.getLogger(__name__)


def _ray_fraction(x: float) -> float:
    x = int(x * 1e4) / 1e4  # Ray keeps 4 decimals
    return float(int(x)) if x >= 1 else x


def fit_resources(stages: Sequence[Stage], config: ExecutorConfig,
                  cluster: dict[str, float]) -> list[tuple[int, float, float]]:
    """(workers, cpus, gpus) per stage. When all pools together ask for more than the cluster has,
    each reservation is scaled down by the same factor so every worker can start (the stages of a
    pipeline are rarely all busy at once; Ray Data stalls outright when the pools cannot all be
    placed); GPU requests are dropped on a cluster without GPUs."""
    workers = [config.stage_workers.get(s.name, config.num_workers) for s in stages]
    cpus = [float(s.resources.cpus) for s in stages]
    gpus = [float(s.resources.gpus) for s in stages]
    total_cpu, total_gpu = float(cluster.get("CPU", 1.0)), float(cluster.get("GPU", 0.0))
    if total_gpu <= 0 and any(gpus):
        log.warning("no GPU in the Ray cluster: GPU stages run on CPU")
        gpus = [0.0] * len(stages)
    cpu_scale = min(1.0, total_cpu / max(1e-9, sum(w * c for w, c in zip(workers, cpus))))
    gpu_demand = sum(w * g for w, g in zip(workers, gpus))
    gpu_scale = min(1.0, total_gpu / gpu_demand) if gpu_demand > 0 else 1.0
    if cpu_scale < 1.0:
        log.info("stage pools ask for more CPUs than the cluster's %s: reservations scaled by %.2f",
                 total_cpu, cpu_scale)
    return [(w, _ray_fraction(c * cpu_scale), _ray_fraction(g * gpu_scale)) for w, c, g in zip(workers, cpus, gpus)]


def worker_threads(stage: Stage, config: ExecutorConfig) -> int:
    return config.threads_per_worker or max(1, int(round(stage.resources.cpus)))


def limit_threads(threads: int) -> None:
    """Keep a worker to its CPU share: environment for libraries not imported yet, direct calls for
    those already imported (torch is not imported here: light stages should not pay for it)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(threads)
