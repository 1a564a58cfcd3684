"""How a parallel job runs: which backend, which Ray cluster, how many workers and threads. None of
it changes what a job computes, so none of it enters a content key."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from anycharv.config import StrictModel

BACKENDS = ("local", "ray-actors", "ray-data")


class ExecutorConfig(StrictModel):
    """Execution settings shared by every parallel job (preprocessing, latent caching, ...)."""

    executor: Literal["local", "ray-actors", "ray-data"] = Field(
        "ray-actors", description="local: in-process (debugging, tests); ray-actors: streaming actor pools; "
                                  "ray-data: Ray Data map_batches on actor pools")
    ray_address: str | None = Field(
        None,
        description="Ray cluster to join ('auto', 'ray://host:10001'); empty: RAY_ADDRESS or a new local cluster")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a new local cluster (empty: all)")
    num_gpus: int | None = Field(None, ge=0, description="GPUs of a new local cluster (empty: all)")
    connect_timeout_s: float = Field(
        15.0, gt=0, le=3600, description="how long to wait for the cluster at ray_address before failing")
    num_workers: int = Field(1, ge=1, description="workers (actors) per stage")
    stage_workers: dict[str, int] = Field(default_factory=dict,
                                          description="workers per stage by name, e.g. {detect: 2}")
    batch_size: int | None = Field(None, ge=1,
                                   description="tasks per stage call for every stage (empty: each stage's own)")
    threads_per_worker: int | None = Field(None, ge=1,
                                           description="torch/OpenMP threads per worker (empty: its CPU share)")
    warm_start: bool = Field(False, description="load every stage's models before the first task (cleaner timings)")
