"""The evaluation driver: a model and a latent cache in, per-clip and aggregate scores out.

``check_inputs`` validates everything on the driver, before Prefect or Ray start (the model
folder, the cache and its encoders, that the two fit, the metric name and weights paths, the
output folder). ``run_evaluation`` plans the clips (``anycharv.evaluation.plan``), runs one
``EvalStage`` on the executor (``runtime.executor``: local, ray-actors, ray-data), then writes
``clips.parquet``, ``aggregate.parquet``, ``summary.json`` and ``config.yaml`` (layout in
``anycharv.evaluation.layout``). Same model, cache and config give the same numbers: the clips,
each clip's reference and its initial noise are functions of the clip id and ``eval.seed``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from anycharv.atomic import atomic_write_bytes, atomic_write_json
from anycharv.datasets import schema
from anycharv.datasets.sample_reader import SampleReader, shards_dir
from anycharv.errors import InputError
from anycharv.evaluation.config import METRICS, EvalJob
from anycharv.evaluation.feature_metrics import (
    MEANINGFUL_SAMPLES,
    check_weight_paths,
    metric_availability,
    set_distance,
)
from anycharv.evaluation.layout import EvalLayout
from anycharv.evaluation.plan import EvalTask, plan_tasks, read_clips
from anycharv.evaluation.stages import EvalStage
from anycharv.executor import make_executor
from anycharv.latent_cache.config import EncoderSource
from anycharv.latent_cache.identity import cache_encoder_source
from anycharv.output_paths import check_output_dir
from anycharv.training.modules import check_context_width
from anycharv.training.run_layout import resolve_model_dir

log = logging.getLogger("anycharv.evaluation")

CLIP_METRICS = [name for name, info in METRICS.items() if info.kind == "clip"]
CLIP_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("clip_id", pa.string()), ("split", pa.string()), ("bucket", pa.string()), ("frames", pa.int64()),
    ("num_frames", pa.int64()), ("status", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ("reference_frame", pa.int64()), ("preview", pa.string()),
    *[(name, pa.float64()) for name in CLIP_METRICS],
]
AGGREGATE_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("metric", pa.string()), ("value", pa.float64()), ("clips", pa.int64()), ("samples", pa.int64()),
    ("higher_is_better", pa.bool_()),
]


@dataclass
class EvalSummary:
    output: str
    model: str
    data: str
    split_used: str = ""
    condition: str = ""
    planned: int = 0  # clips chosen
    clips: int = 0  # clips scored
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_clips: list[dict] = field(default_factory=list)
    metric: str = "psnr_mask"
    score: float | None = None
    higher_is_better: bool = True
    aggregate: dict[str, float | None] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)  # per metric: clips, or frames (FID) / videos (FVD)
    metrics_available: list[str] = field(default_factory=list)
    metrics_skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    steps: int = 0
    guidance: float = 0.0
    num_frames: int = 0
    config_hash: str = ""
    clips_parquet: str = ""
    aggregate_parquet: str = ""
    summary_json: str = ""
    previews: list[str] = field(default_factory=list)
    ray_started: bool = False
    generate_s: float = 0.0
    clips_per_s: float = 0.0
    total_s: float = 0.0


def is_better(new: float | None, old: float | None, higher_is_better: bool, min_delta: float = 0.0) -> bool:
    """Whether score ``new`` beats ``old`` by more than ``min_delta`` (in the metric's unit). A
    missing new score never wins; a missing old one always loses."""
    if new is None or (isinstance(new, float) and math.isnan(new)):
        return False
    if old is None or (isinstance(old, float) and math.isnan(old)):
        return True
    return new > old + min_delta if higher_is_better else new < old - min_delta


@dataclass(frozen=True)
class Inputs:
    model_dir: Path
    cache_dir: Path
    output: Path
    encoders: EncoderSource
    clip_dim: int


def check_metric(job: EvalJob) -> None:
    """``eval.metric`` must be a known metric that this config computes."""
    name = job.eval.metric
    if name not in METRICS:
        raise InputError("eval.metric", f"unknown metric {name!r} (known: {', '.join(METRICS)})", code="bad_metric")
    available, skipped = metric_availability(job.eval)
    if name not in available:
        raise InputError("eval.metric", f"{name} is not computed by this config: {skipped[name]}", code="bad_metric")


def cache_clip_width(cache_dir: Path) -> int:
    """The width of the cache's CLIP embeddings (read from its first stage-1 sample)."""
    reader = SampleReader(shards_dir(cache_dir))
    try:
        sample = next(s for s in reader.samples if s.set == "stage1")
        return int(reader.view(sample).array(schema.REF_CLIP, 3, 1).shape[-1])
    finally:
        reader.close()


def _unet_configs(model_dir: Path, where: str) -> dict:
    """The two UNets' configs as ``check_context_width`` reads them (``.config.cross_attention_dim``),
    without loading any weights."""
    nets = {}
    for name in ("reference_unet", "denoising_unet"):
        path = model_dir / name / "config.json"
        try:
            width = int(json.loads(path.read_text())["cross_attention_dim"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(where, f"{path} is not a readable UNet config ({exc})", code="no_model") from exc
        nets[name] = SimpleNamespace(config=SimpleNamespace(cross_attention_dim=width))
    return nets


def check_inputs(job: EvalJob, model: str, data: str, output: str,
                 names: tuple[str, str, str] = ("model", "data", "output")) -> Inputs:
    """Everything that can be checked before Prefect or Ray start; errors name the input (``names``:
    how to call the model, data and output arguments, e.g. the CLI's flags)."""
    check_metric(job)
    check_weight_paths(job.eval)
    try:
        model_dir = resolve_model_dir(model)
    except InputError as exc:
        raise InputError(f"{names[0]} {model}", exc.reason, code=exc.code) from exc
    read_clips(data, names[1])
    cache_dir = Path(data).expanduser().resolve()
    encoders = cache_encoder_source(cache_dir)
    clip_dim = cache_clip_width(cache_dir)
    check_context_width(_unet_configs(model_dir, f"{names[0]} {model}"), clip_dim, f"{names[0]} {model}")
    return Inputs(model_dir, cache_dir, check_output_dir(output, names[2]), encoders, clip_dim)


def _progress(total: int, enabled: bool):
    if not enabled or not total or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="evaluate", unit="clip")


def _write_table(rows: list[dict], columns: list[tuple[str, pa.DataType]], path: Path) -> None:
    table = pa.table({name: pa.array([r.get(name) for r in rows], type=dtype) for name, dtype in columns})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(path, buf.getvalue())


def clip_row(task: EvalTask) -> dict:
    row = {"clip_id": task.clip_id, "split": task.split, "bucket": task.bucket, "frames": task.frames,
           "num_frames": task.num_frames, "status": task.status, "reason": task.reason, "detail": task.detail,
           "reference_frame": task.reference_frame, "preview": task.preview_path or None}
    row.update({name: task.metrics.get(name) if task.ok else None for name in CLIP_METRICS})
    return row


def aggregate(tasks: list[EvalTask], available: list[str]) -> tuple[dict[str, float | None], dict[str, int],
                                                                    dict[str, int]]:
    """(value, clips, samples) per available metric: per-clip metrics averaged over the clips that
    have a value; FID / FVD from the features the clips left."""
    ok = [t for t in tasks if t.ok]
    values: dict[str, float | None] = {}
    clips: dict[str, int] = {}
    samples: dict[str, int] = {}
    for name in available:
        if METRICS[name].kind == "clip":
            scored = [t.metrics[name] for t in ok if t.metrics.get(name) is not None]
            values[name] = round(float(np.mean(scored)), 6) if scored else None
            clips[name] = samples[name] = len(scored)
            continue
        generated, target, used = [], [], 0
        for task in ok:
            if not task.features_path or not Path(task.features_path).is_file():
                continue
            with np.load(task.features_path, allow_pickle=False) as arrays:
                if f"{name}_generated" in arrays:
                    generated.append(arrays[f"{name}_generated"])
                    target.append(arrays[f"{name}_target"])
                    used += 1
        values[name], samples[name] = set_distance(name, generated, target)
        clips[name] = used
    return values, clips, samples


def run_evaluation(job: EvalJob, model: str, data: str, output: str) -> EvalSummary:
    """Score ``model`` (an exported folder, a run folder or a checkpoint) on held-out clips of the
    latent cache ``data`` by self-reconstruction; files under ``output``."""
    started = time.perf_counter()
    inputs = check_inputs(job, model, data, output)
    cfg = job.eval
    layout = EvalLayout.at(inputs.output).prepare()
    atomic_write_bytes(layout.config, yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False).encode())
    available, skipped = metric_availability(cfg)
    split, tasks = plan_tasks(read_clips(inputs.cache_dir), cfg)
    summary = EvalSummary(output=str(layout.root), model=str(inputs.model_dir), data=str(inputs.cache_dir),
                          split_used=split, condition=cfg.condition, planned=len(tasks), metric=cfg.metric,
                          higher_is_better=METRICS[cfg.metric].higher_is_better, metrics_available=available,
                          metrics_skipped=skipped, steps=cfg.steps, guidance=cfg.guidance, num_frames=cfg.num_frames,
                          config_hash=job.content_hash(), clips_parquet=str(layout.clips),
                          aggregate_parquet=str(layout.aggregate), summary_json=str(layout.summary))
    if split != cfg.split:
        summary.warnings.append(f"the cache has no {cfg.split} clip: scored {len(tasks)} {split} clips instead "
                                "(the model may have been trained on them)")

    done: dict[str, EvalTask] = {}
    generate_started = time.perf_counter()
    stage = EvalStage(cfg, str(inputs.model_dir), inputs.encoders, str(inputs.cache_dir), str(layout.previews),
                      str(layout.features), inputs.clip_dim, device=job.runtime.device, dtype=job.runtime.dtype,
                      vae_chunk=job.runtime.vae_chunk)
    bar = _progress(len(tasks), job.runtime.progress)

    def publish(task: EvalTask) -> None:
        done[task.clip_id] = task
        if bar is not None:
            bar.update()

    try:
        with make_executor(job.runtime) as executor:
            executor.run(tasks, [stage], publish)
            summary.ray_started = executor.connected
    finally:
        if bar is not None:
            bar.close()
    summary.generate_s = round(time.perf_counter() - generate_started, 3)

    finished = [done.get(t.clip_id, t) for t in tasks]  # the plan's order
    ok = [t for t in finished if t.ok]
    rejected = [t for t in finished if not t.ok]
    summary.clips = len(ok)
    summary.rejected = dict(Counter(t.reason for t in rejected))
    summary.rejected_clips = [{"clip_id": t.clip_id, "reason": t.reason, "detail": t.detail} for t in rejected]
    values, clips, samples = aggregate(finished, available)
    summary.aggregate, summary.samples = values, samples
    summary.score = values.get(cfg.metric)
    summary.previews = [t.preview_path for t in ok if t.preview_path]
    for name in ("fid", "fvd"):
        if name in available and samples.get(name, 0) < MEANINGFUL_SAMPLES[name]:
            unit = "frames" if name == "fid" else f"{cfg.fvd_frames}-frame videos"
            summary.warnings.append(f"{name.upper()} on {samples.get(name, 0)} {unit} per side: statistically "
                                    f"meaningless below ~{MEANINGFUL_SAMPLES[name]}; compare it only between models "
                                    "scored on the same clips")
    if rejected:
        log.warning("evaluation: %d of %d clips rejected (%s)", len(rejected), len(finished),
                    ", ".join(f"{k}={v}" for k, v in summary.rejected.items()))
    for warning in summary.warnings:
        log.warning("evaluation: %s", warning)

    _write_table([clip_row(t) for t in finished], CLIP_COLUMNS, layout.clips)
    _write_table([{"metric": name, "value": values[name], "clips": clips[name], "samples": samples[name],
                   "higher_is_better": METRICS[name].higher_is_better} for name in available],
                 AGGREGATE_COLUMNS, layout.aggregate)
    if summary.clips and summary.generate_s > 0:
        summary.clips_per_s = round(summary.clips / summary.generate_s, 5)
    summary.total_s = round(time.perf_counter() - started, 3)
    atomic_write_json(layout.summary, asdict(summary))
    return summary
