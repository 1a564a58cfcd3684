"""Start a training stage: check the inputs on the driver, then run ``train_loop`` in this process
(``runtime.launcher=local``) or on Ray Train's ``TorchTrainer`` (a local Ray by default, an existing
cluster by address), with ``RUN/checkpoints`` as Ray Train's storage so a relaunch resumes there.

A run folder belongs to one run (``run.json``: stage, config hash, data folder): rerunning the same
command resumes it, a larger ``max_steps`` extends it, another config is refused.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from anycharv.atomic import atomic_write_json
from anycharv.config import dump_config
from anycharv.errors import InputError, own_error
from anycharv.training.config import TrainJob
from anycharv.training.data import split_buckets
from anycharv.training.metrics import read_jsonl
from anycharv.training.run_layout import RunLayout

log = logging.getLogger("anycharv.training")


def check_data(data_dir: Path, job: TrainJob) -> list[str]:
    """The train buckets, or a clear error about the cache folder (before any worker starts)."""
    from anycharv.datasets.sample_reader import shards_dir
    from anycharv.datasets.shard_index import INDEX_NAME

    if not (shards_dir(data_dir) / INDEX_NAME).is_file():
        raise InputError(str(data_dir), "no shards/index.parquet here (run `anycharv cache` first)", code="no_index")
    buckets = split_buckets(data_dir, job.train, "train")
    if not buckets:
        raise InputError(str(data_dir), f"no train samples for {job.train.stage}", code="empty_dataset")
    return buckets


def claim_run(layout: RunLayout, job: TrainJob, data_dir: Path) -> None:
    """Write ``run.json``, or refuse when the folder holds another run."""
    identity = {**job.train.identity(), "data": str(data_dir)}
    if layout.run_json.is_file():
        previous = json.loads(layout.run_json.read_text())
        if previous != identity:
            changed = sorted(k for k in identity if previous.get(k) != identity[k])
            raise InputError(str(layout.root), f"holds another training run (its {changed} differ: {previous}); "
                             "use another --output, or the same stage, data and train.* settings to resume it",
                             code="run_mismatch")
    layout.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(layout.run_json, identity)


def run_training(job: TrainJob, data_dir: str, run_dir: str, encoders=None, device: str | None = None) -> dict:
    """Train (or resume, or extend) the run in ``run_dir``; returns the figures (also ``RUN/summary.json``).
    ``encoders``: an ``EncoderSource`` for validation (default: the cache's own)."""
    started = time.perf_counter()
    data = Path(data_dir).expanduser().resolve()
    layout = RunLayout.at(run_dir)
    buckets = check_data(data, job)
    claim_run(layout, job, data)
    from anycharv.training.worker_context import sweep_scratch

    sweep_scratch(layout)
    latest = layout.latest_checkpoint()
    summary: dict = {"run_dir": str(layout.root), "stage": job.train.stage, "buckets": buckets,
                     "max_steps": job.runtime.max_steps, "resumed_from": latest[0] if latest else None}
    if latest is not None and latest[0] >= job.runtime.max_steps:
        summary.update(skipped=True, final_step=latest[0], steps=0)
    else:
        dump_config(job, layout.config)
        config = {"job": job.model_dump(mode="json"), "data": str(data), "run_dir": str(layout.root),
                  "encoders": asdict(encoders) if encoders is not None else None, "device": device,
                  "start_step": latest[0] if latest else 0}
        if job.runtime.launcher == "local":
            if job.runtime.num_workers != 1:
                raise InputError("runtime.num_workers", "the local launcher runs one worker; use runtime.launcher=ray",
                                 code="bad_option")
            from anycharv.training.loop import train_loop

            result = train_loop(config)
        else:
            result = _fit_on_ray(job, layout, config)
        summary.update(skipped=False, **{k: result.get(k) for k in ("steps", "final_step", "seconds")})
        summary["validations"] = result.get("validations", [])
    latest = layout.latest_checkpoint()
    summary["checkpoint"] = str(latest[1]) if latest else None
    steps = read_jsonl(layout.metrics)
    summary["last_loss"] = steps[-1]["loss"] if steps else None
    summary["total_s"] = round(time.perf_counter() - started, 3)
    atomic_write_json(layout.summary, summary)
    return summary


def _fit_on_ray(job: TrainJob, layout: RunLayout, config: dict) -> dict:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from anycharv.ray_session import ray_session

    rt = job.runtime
    # Ray Train's print patch logs each line of the loop a second time; the driver gets it once anyway
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    with ray_session(rt):
        use_gpu = rt.use_gpu if rt.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
        trainer = TorchTrainer(
            _ray_worker, train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=rt.num_workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": rt.cpus_per_worker,
                                                               **({"GPU": 1} if use_gpu else {})}),
            run_config=RunConfig(storage_path=str(layout.root), name=layout.checkpoints.name,
                                 checkpoint_config=CheckpointConfig(num_to_keep=rt.checkpoint.keep),
                                 failure_config=FailureConfig(max_failures=0)))
        try:
            result = trainer.fit()
        except Exception as exc:  # noqa: BLE001 - Ray wraps the worker's error; surface ours when it is one
            ours = own_error(exc)
            if ours is not None:
                raise ours from exc
            raise
    records = read_jsonl(layout.metrics)
    metrics = getattr(result, "metrics", None) or {}
    final = metrics.get("step", records[-1]["step"] if records else 0)
    start = int(config.get("start_step") or 0)
    return {"steps": final - start, "final_step": final, "seconds": round(sum(
        r["seconds"] for r in records if r["step"] > start), 3),
        "validations": [r for r in read_jsonl(layout.validation_log) if r["step"] >= start]}


def _ray_worker(config: dict) -> None:
    from anycharv.training.loop import train_loop
    from anycharv.training.ray_context import RayContext

    train_loop(config, RayContext())

