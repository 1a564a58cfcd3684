"""What the two Ray backends share: the Ray session (started or joined on first use, closed only
if it was made here) and the cluster's size."""

from __future__ import annotations

import time

import ray

from anycharv.executor.base import Executor
from anycharv.ray_session import ray_session


class RayExecutor(Executor):
    def connect(self) -> None:
        if self.connected:
            return
        start = time.perf_counter()
        self._scope.enter_context(ray_session(self.config))
        self.connected = True
        self.connect_s = time.perf_counter() - start

    def cluster_cpus(self) -> float:
        self.connect()
        return float(ray.cluster_resources().get("CPU", 1.0))
