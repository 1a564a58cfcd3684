"""What a training run computes (``TrainConfig``: its identity, so a rerun in the same folder resumes
only the same run) and how it runs (``TrainRuntime``: never part of it). ``TrainJob`` is the typed
parameter of the Prefect flow ``train`` and of ``anycharv train``; the per-stage defaults live in
``configs/train/<stage>.yaml``; overrides read ``optim.lr=1e-5``, ``data.batch_size=4``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from anycharv.config import StrictModel, config_hash

STAGES = ("stage1_image", "stage1_video", "stage2")
Stage = Literal["stage1_image", "stage1_video", "stage2"]


class InitConfig(StrictModel):
    """Where the networks start (one of them; ``anycharv train --init/--preset`` set these)."""

    preset: Literal["tiny"] | None = Field(None, description="tiny: small random networks (tests, demos)")
    model: str | None = Field(None, description="a previous stage's run folder, an exported folder, our "
                                                "component folders or an official AnyCharV release")
    unet2d: str | None = Field(None, description="SD-1.5 / sd-image-variations UNet folder (or file): both UNets "
                                                 "start from it, the denoising UNet's conv_in widened to 9 channels")
    motion_module: str | None = Field(None, description="AnimateDiff motion-module weights (mm_sd_v15*.ckpt, "
                                                        "a MotionAdapter folder) loaded over the start (video stages)")
    seed: int = Field(0, description="seed of random starts")

    @model_validator(mode="after")
    def _one_start(self) -> "InitConfig":
        given = [name for name in ("preset", "model", "unet2d") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"give one of init.preset, init.model, init.unet2d (got {given})")
        return self


class DataConfig(StrictModel):
    batch_size: int = Field(2, ge=1, description="samples per optimizer step and rank")
    num_frames: int = Field(8, ge=1, le=64, description="frames per sample of the video stages")
    sample_rate: int = Field(1, ge=1, description="take every n-th frame of a clip (video stages)")
    buckets: list[str] | None = Field(None, description="resolution buckets to train on, e.g. [512x512] (empty: all "
                                                        "of the split); each batch comes from one")
    augment_prob: float = Field(0.5, ge=0.0, le=1.0, description="chance of an augmented fine mask (stage 1)")
    sample_posterior: bool = Field(True, description="targets sampled from the VAE posterior (else its mean)")
    boost_dir: str | None = Field(None, description="self-boost output (stage 2; empty: DATA/shards/boost)")
    strict: bool = Field(True, description="stop at bad data (else skip and count it)")


class ObjectiveConfig(StrictModel):
    noise_offset: float = Field(0.05, ge=0.0, le=1.0, description="per-channel offset noise (brightness range)")
    min_snr_gamma: float | None = Field(5.0, gt=0.0, description="min-SNR loss weighting gamma (empty: off)")
    condition_dropout: float = Field(0.1, ge=0.0, le=1.0,
                                     description="share of samples without CLIP context and reference attention "
                                                 "(what classifier-free guidance needs)")


class OptimConfig(StrictModel):
    lr: float = Field(1e-5, gt=0.0, description="AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    warmup_steps: int = Field(0, ge=0, description="linear warmup from 0")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="after warmup; cosine decays to 0 at decay_steps (not at max_steps, so a longer "
                                "run continues the same curve)")
    decay_steps: int = Field(10000, ge=1, description="step where the cosine schedule reaches 0")
    max_grad_norm: float | None = Field(1.0, gt=0.0, description="gradient clipping (empty: off)")


class ModulesConfig(StrictModel):
    video_trains: Literal["motion", "all"] = Field(
        "motion", description="stage1_video: train the motion modules only, or every stage-1 network")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (memory for time)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast dtype (auto: bf16 on a GPU that has it, else fp16 on GPU, fp32 on CPU)")
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0, description="keep an EMA of the trained weights")


class ValidationConfig(StrictModel):
    every: int = Field(0, ge=0, description="validate every n steps (0: only at the end)")
    num_clips: int = Field(2, ge=1, description="held-out clips per validation")
    steps: int = Field(10, ge=1, description="DDIM steps of the validation generations")
    guidance: float = Field(1.0, ge=0.0, description="classifier-free guidance of the validation generations")
    num_frames: int = Field(8, ge=1, description="frames generated per clip (video stages)")
    split: Literal["val", "train"] = Field("val", description="val: held-out clips (train when the cache has none)")
    enabled: bool = True


class TrainConfig(StrictModel):
    stage: Stage = Field("stage1_image", description="stage1_image, stage1_video or stage2")
    init: InitConfig = InitConfig()
    data: DataConfig = DataConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    optim: OptimConfig = OptimConfig()
    modules: ModulesConfig = ModulesConfig()
    seed: int = Field(0, description="seed of the data order, noise, timesteps and dropout")

    def identity(self) -> dict:
        """What must match for a rerun in the same folder to continue the run."""
        return {"stage": self.stage, "config": config_hash(self)}


class CheckpointConfig(StrictModel):
    every: int = Field(100, ge=1, description="checkpoint every n steps (and at the end)")
    keep: int = Field(3, ge=1, description="checkpoints kept (the newest)")


class TrainRuntime(StrictModel):
    max_steps: int = Field(1000, ge=1, description="stop after this many optimizer steps in all (a rerun with more "
                                                   "continues the run)")
    checkpoint: CheckpointConfig = CheckpointConfig()
    validation: ValidationConfig = ValidationConfig()
    num_workers: int = Field(1, ge=1, description="training workers (ranks); Ray Train runs them")
    launcher: Literal["ray", "local"] = Field("ray", description="ray: Ray Train TorchTrainer (local Ray or "
                                                                 "ray_address); local: in this process, 1 worker")
    use_gpu: bool | None = Field(None, description="one GPU per worker (empty: when the cluster has GPUs)")
    cpus_per_worker: float = Field(1.0, gt=0.0)
    threads_per_worker: int | None = Field(
        None, ge=1, description="torch threads per worker (empty: all cores with the local launcher, the worker's "
                                "CPUs under Ray)")
    ray_address: str | None = Field(None, description="Ray cluster to join; empty: RAY_ADDRESS or a local one")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a new local Ray cluster (empty: all)")
    num_gpus: int | None = Field(None, ge=0, description="GPUs of a new local Ray cluster (empty: all)")
    connect_timeout_s: float = Field(15.0, gt=0, le=3600)
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: a replica per worker; fsdp: trained weights, gradients and optimizer state "
                           "sharded over the workers (checkpoints are the same either way)")
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes per rank")
    log_every: int = Field(1, ge=1, description="print a progress line every n steps")


class TrainJob(StrictModel):
    """A training stage plus how to run it."""

    train: TrainConfig = TrainConfig()
    runtime: TrainRuntime = TrainRuntime()
