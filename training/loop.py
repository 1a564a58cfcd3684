"""The training loop of one worker: plain Python that a test calls directly (``LocalContext``) and
Ray Train runs on every rank (``ray_context.RayContext``).

A step: the bucket's next batch -> per-sample draws (``objective``) -> forward under autocast ->
backward -> clip -> AdamW with the step's learning rate -> EMA. Rank 0 logs the step, writes the
checkpoints and validates. Everything a step depends on is restored from a checkpoint (weights,
optimizer, data position, scaler, EMA, RNG), and the draws are seeded per sample, so a resumed run
continues the loss sequence of an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from anycharv.devices import pick_dtype
from anycharv.errors import InputError
from anycharv.training.checkpoint import (
    check_optimizer_names,
    load_networks_into,
    load_optimizer,
    optimizer_tensors,
    read_checkpoint,
    set_rng_state,
    write_checkpoint,
)
from anycharv.training.config import OptimConfig, TrainJob
from anycharv.training.data import BucketBatches
from anycharv.training.metrics import MetricsLog
from anycharv.training.modules import check_context_width, set_trainable, start_networks
from anycharv.training.network import TrainingNetwork, stage_batch
from anycharv.training.objective import Objective
from anycharv.training.run_layout import RunLayout, checkpoint_state, is_complete
from anycharv.training.worker_context import LocalContext, scratch_dir

log = logging.getLogger("anycharv.training")


def learning_rate(cfg: OptimConfig, step: int) -> float:
    """LR of optimizer step ``step`` (0-based): linear warmup, then constant or cosine to ``decay_steps``.
    It does not depend on ``max_steps``, so extending a run continues the same curve."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(cfg.decay_steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None for fp32 (CPU, or asked for); else the GPU's half type."""
    if precision == "fp32" or device.type == "cpu":
        return None
    return pick_dtype(device, None if precision == "auto" else precision)


def latest_resume_point(layout: RunLayout, extra: list[Path]) -> Path | None:
    """The complete checkpoint with the highest step among the run folder's and ``extra``."""
    found = [path for _, path in layout.complete_checkpoints()] + [p for p in extra if is_complete(p)]
    if not found:
        return None
    return max(found, key=lambda p: checkpoint_state(p)["step"])


class EMA:
    """Exponential moving average (fp32) of the trained parameters."""

    def __init__(self, networks: dict[str, nn.Module], decay: float):
        self.decay = decay
        self.params = {net: {n: p.detach().float().clone() for n, p in module.named_parameters() if p.requires_grad}
                       for net, module in networks.items()}
        self.params = {k: v for k, v in self.params.items() if v}

    @torch.no_grad()
    def update(self, networks: dict[str, nn.Module]) -> None:
        for net, params in self.params.items():
            live = dict(networks[net].named_parameters())
            for name, value in params.items():
                value.mul_(self.decay).add_(live[name].detach().float(), alpha=1.0 - self.decay)


def train_loop(config: dict, context=None) -> dict:
    """Train until ``runtime.max_steps``. ``config``: {"job": TrainJob as JSON, "data": cache folder,
    "run_dir": run folder, "encoders": EncoderSource fields or None}. Returns rank 0's figures."""
    job = TrainJob.model_validate(config["job"])
    cfg, rt = job.train, job.runtime
    layout = RunLayout.at(config["run_dir"])
    data_dir = config["data"]
    ctx = context or LocalContext(layout, rt.checkpoint.keep, config.get("device"))
    device, rank = ctx.device, ctx.rank
    if rt.threads_per_worker:  # else torch's default: all cores in process, the CPU share under Ray
        torch.set_num_threads(rt.threads_per_worker)

    nets = start_networks(cfg.init, cfg.stage)
    trained = set_trainable(nets, cfg)
    resume = latest_resume_point(layout, ctx.resume_candidates())
    state = read_checkpoint(resume) if resume is not None else None
    if state is not None:
        if state.get("identity") != cfg.identity():
            raise InputError(str(resume), f"checkpoint of another run ({state.get('identity')}, this run "
                             f"{cfg.identity()})", code="run_mismatch")
        load_networks_into(nets, resume)  # requires_grad is the parameters' own: set_trainable's stays
    if cfg.modules.gradient_checkpointing:
        for name, net in nets.items():
            if trained[name] and hasattr(net, "enable_gradient_checkpointing"):
                net.enable_gradient_checkpointing()
    for net in nets.values():
        net.to(device)

    objective = Objective(cfg.objective.noise_offset, cfg.objective.min_snr_gamma, cfg.objective.condition_dropout)
    network = TrainingNetwork(nets, objective)
    model: nn.Module = network
    sharded = ctx.world_size > 1 and rt.strategy == "fsdp"
    if sharded:
        from anycharv.training.fsdp import shard

        shard(nets)  # in place: the parameters become shards (DTensors); the optimizer is built on them
    elif ctx.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    param_names = [f"{net}.{name}" for net in sorted(trained) for name in trained[net]]
    lookup = {f"{net}.{name}": p for net in nets for name, p in nets[net].named_parameters()}
    params = [lookup[n] for n in param_names]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                  weight_decay=cfg.optim.weight_decay)
    half = autocast_dtype(cfg.modules.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=half == torch.float16)
    ema = EMA(nets, cfg.modules.ema_decay) if cfg.modules.ema_decay else None

    step, position = 0, None
    if state is not None:
        step = int(state["step"])
        if sharded:
            from anycharv.training.fsdp import load_full_optimizer

            check_optimizer_names(param_names, state["optimizer"], str(resume))
            load_full_optimizer(network, optimizer, param_names, state["optimizer_tensors"], state["optimizer"])
        else:
            load_optimizer(optimizer, param_names, state["optimizer_tensors"], state["optimizer"], str(resume))
        set_rng_state(state["rng_tensors"], state["rng"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state["ema"]:
            from anycharv.training.fsdp import shard_like

            for net, values in state["ema"].items():
                ema.params[net] = {k: shard_like(v.float(), ema.params[net][k]) for k, v in values.items()}
        position = state["data"] if state.get("world_size") == ctx.world_size else None
        if position is None:
            log.warning("resuming on %d worker(s) after %s: the data order restarts its epochs", ctx.world_size,
                        state.get("world_size"))
            position = {b: {"epoch": p["epoch"] + 1, "batches": 0} for b, p in state["data"].items()}
        if rank == 0:
            log.info("resuming from %s (step %d)", resume.name, step)
    batches = BucketBatches(data_dir, cfg, rank=rank, world_size=ctx.world_size, loader_workers=rt.loader_workers,
                            position=position)
    clip_dim = None

    metrics = MetricsLog(layout.metrics, layout.validation_log, layout.tensorboard, step) if rank == 0 else None
    validator = _validator(config, job, device, half) if rank == 0 and rt.validation.enabled else None
    summary = {"start_step": step, "steps": 0, "final_step": step, "validations": []}
    started, last = time.perf_counter(), None
    try:
        if rt.validation.enabled and step == 0:  # the baseline the later scores compare with
            _validate_all(validator, network, metrics, layout, 0, sharded, summary)
        while step < rt.max_steps:
            t0 = time.perf_counter()
            bucket, raw = batches.next(step)
            batch = stage_batch(raw, cfg.stage).to(device)
            draws = objective.draw(batch.seeds, tuple(batch.target.shape[1:])).to(device)
            if clip_dim is None:
                clip_dim = int(batch.ref_clip.shape[-1])
                check_context_width(nets, clip_dim, str(data_dir))
            lr = learning_rate(cfg.optim, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=half) if half else nullcontext():
                loss = model(batch, draws)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.max_grad_norm or float("inf"))
            grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(nets)
            step += 1
            mean_loss = float(ctx.all_mean(loss.detach().float()))
            seconds = time.perf_counter() - t0
            if rank == 0:
                record = {"step": step, "loss": mean_loss, "lr": lr, "grad_norm": round(float(grad_norm), 6),
                          "samples_per_s": round(cfg.data.batch_size * ctx.world_size / seconds, 3),
                          "bucket": bucket, "epoch": batches.epoch(), "seconds": round(seconds, 4)}
                metrics.step(record)
                last = record
                if step % rt.log_every == 0 or step == rt.max_steps:
                    print(f"step {step}/{rt.max_steps} loss {mean_loss:.5f} lr {lr:.2e} "
                          f"{record['samples_per_s']} samples/s", flush=True)
            summary["steps"] += 1
            due_validation = rt.validation.every and step % rt.validation.every == 0
            if rt.validation.enabled and (due_validation or step == rt.max_steps):
                _validate_all(validator, network, metrics, layout, step, sharded, summary)
            ctx.barrier()
            if step % rt.checkpoint.every == 0 or step == rt.max_steps:
                _checkpoint(ctx, layout, network, optimizer, param_names, scaler, ema, batches, cfg, step, last,
                            sharded)
    finally:
        if metrics is not None:
            metrics.close()
    summary["final_step"] = step
    summary["seconds"] = round(time.perf_counter() - started, 3)
    summary["last"] = last
    return summary


def _validator(config: dict, job: TrainJob, device: torch.device, half: torch.dtype | None):
    from anycharv.latent_cache.config import EncoderSource
    from anycharv.latent_cache.identity import cache_encoder_source
    from anycharv.model.components import load_encoders
    from anycharv.training.validation import Validator

    source = EncoderSource(**config["encoders"]) if config.get("encoders") else cache_encoder_source(config["data"])
    vae = load_encoders(source.weights, preset=source.preset, vae=source.vae,
                        image_encoder=source.image_encoder)["vae"].to(device)
    return Validator(config["data"], job.train, job.runtime.validation, vae, device, half)


def _validate_all(validator, network: TrainingNetwork, metrics, layout: RunLayout, step: int, sharded: bool,
                  summary: dict) -> None:
    """Rank 0 validates; with FSDP every rank first helps gather the weights, and rank 0 validates
    whole copies (a sharded forward would wait for ranks that do not run it)."""
    if not sharded:
        if validator is not None:
            summary["validations"].append(_validate(validator, network, metrics, layout, step))
        return
    from anycharv.training.fsdp import full_weights

    weights = full_weights(network, tuple(network.networks()))
    if validator is not None:
        copies = {}
        for name, net in network.networks().items():
            copies[name] = type(net).from_config(net.config)
            copies[name].load_state_dict(weights[name])
            copies[name].to(validator.device)
        summary["validations"].append(_validate(validator, network, metrics, layout, step, copies))


def _validate(validator, network: TrainingNetwork, metrics: MetricsLog, layout: RunLayout, step: int,
              networks: dict | None = None) -> dict:
    import PIL.Image

    if networks is not None:
        record, preview = validator.run(networks, step)
    else:
        network.detach_control()
        try:
            record, preview = validator.run(network.networks(), step)
        finally:
            network.attach_control()
    layout.validation_dir.mkdir(parents=True, exist_ok=True)
    path = layout.validation_dir / f"step-{step:08d}.png"
    PIL.Image.fromarray(preview).save(path)
    record["preview"] = str(path)
    metrics.validation(record, preview)
    print(f"validation at step {step}: PSNR {record['psnr']} dB ({record['clips']} {record['split']} clip(s))",
          flush=True)
    return record


def _checkpoint(ctx, layout: RunLayout, network: TrainingNetwork, optimizer, param_names, scaler, ema, batches,
                cfg, step: int, last: dict | None, sharded: bool) -> None:
    """Rank 0 writes the checkpoint; with FSDP every rank first helps gather the full state."""
    weights, ema_params = None, ema.params if ema is not None else None
    if sharded:
        from anycharv.training.fsdp import full_optimizer, full_tensor, full_weights

        weights = full_weights(network, tuple(network.networks()))
        optimizer_state = full_optimizer(network, optimizer, param_names)
        if ema_params is not None:
            ema_params = {n: {k: full_tensor(v).cpu() for k, v in p.items()} for n, p in ema_params.items()}
    elif ctx.rank == 0:
        optimizer_state = optimizer_tensors(optimizer, param_names)
    folder = None
    if ctx.rank == 0:
        folder = scratch_dir(layout, step, ctx.rank)
        state = {"step": step, "data": batches.state(), "world_size": ctx.world_size, "identity": cfg.identity(),
                 "stage": cfg.stage, "lr_schedule": {"next_step": step, **cfg.optim.model_dump(mode="json")},
                 "scaler": scaler.state_dict() if scaler.is_enabled() else None}
        write_checkpoint(folder, network.networks(), optimizer_state, state, ema_params, weights)
    ctx.report({"step": step, "loss": (last or {}).get("loss")}, folder, step)
