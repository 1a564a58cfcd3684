"""The worker context inside Ray Train's ``TorchTrainer`` (the process group is Ray's: gloo on CPU,
NCCL on GPU). Checkpoints go through ``ray.train.report``, which every rank calls the same number
of times (it is a barrier); rank 0 hands over the folder, Ray Train copies it to
``RUN/checkpoints/checkpoint_NNNNNNNN`` and deletes the oldest beyond ``checkpoint.keep``."""

from __future__ import annotations

import shutil
from pathlib import Path

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from anycharv.training.run_layout import checkpoint_name


class RayContext:
    def __init__(self):
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def report(self, metrics: dict, checkpoint_dir: Path | None, step: int) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_name(step))
        if checkpoint_dir is not None:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)

    def resume_candidates(self) -> list[Path]:
        """Ray Train's latest checkpoint of this run (after a worker restart or a relaunch)."""
        checkpoint = ray.train.get_checkpoint()
        return [Path(checkpoint.path)] if checkpoint is not None else []

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def all_mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world_size
