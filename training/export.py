"""``anycharv export``: a run (or one checkpoint) -> a complete pipeline folder that
``AnyCharVPipeline.from_pretrained`` and ``anycharv infer --weights`` load (``model_index.json``,
the three trained networks, the VAE and image encoder the run's cache was made with, scheduler,
feature extractor). Written under a temporary name and renamed, so a folder that exists is whole."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from anycharv.errors import InputError
from anycharv.training.run_layout import resolve_model_dir


def _encoder_source(run_or_model: Path, vae: str | None, image_encoder: str | None, weights: str | None,
                    preset: str | None):
    from anycharv.latent_cache.config import EncoderSource
    from anycharv.latent_cache.identity import cache_encoder_source

    if preset or weights or (vae and image_encoder):
        return EncoderSource(weights=weights, preset=preset, vae=vae, image_encoder=image_encoder)
    run_json = run_or_model / "run.json"
    if run_json.is_file():
        source = cache_encoder_source(json.loads(run_json.read_text())["data"])
        return EncoderSource(weights=source.weights, preset=source.preset, vae=vae or source.vae,
                             image_encoder=image_encoder or source.image_encoder)
    raise InputError(str(run_or_model), "not a run folder, so the encoders are unknown: give --vae and "
                     "--image-encoder (or --weights / --preset tiny)", code="no_encoders")


def export_model(source: str | os.PathLike, output: str | os.PathLike, *, ema: bool = False, vae: str | None = None,
                 image_encoder: str | None = None, weights: str | None = None, preset: str | None = None) -> Path:
    """Write the pipeline folder ``output`` from ``source`` (a run folder: its latest checkpoint; a
    checkpoint folder; or a model folder with explicit encoders)."""
    from anycharv.model.components import load_encoders, load_networks

    root = Path(source).expanduser().resolve()
    model_dir = resolve_model_dir(root, ema=ema)
    run_dir = next((d for d in (root, root.parent.parent) if (d / "run.json").is_file()), root)  # run, checkpoint
    encoders = _encoder_source(run_dir, vae, image_encoder, weights, preset)
    components = {**load_networks(str(model_dir)),
                  **load_encoders(encoders.weights, preset=encoders.preset, vae=encoders.vae,
                                  image_encoder=encoders.image_encoder)}
    return write_pipeline(components, output, {"source": str(model_dir), "ema": ema})


def export_start(cache_dir: str | os.PathLike, output: str | os.PathLike, *, preset: str = "tiny",
                 seed: int = 0) -> Path:
    """The untrained start of ``preset`` (the networks stage-1 training begins from, seeded
    ``seed``) with the encoders the cache ``cache_dir`` was made with: the baseline that tells
    what training changed."""
    from anycharv.latent_cache.identity import cache_encoder_source
    from anycharv.model.components import load_encoders
    from anycharv.training.config import InitConfig
    from anycharv.training.modules import start_networks

    encoders = cache_encoder_source(cache_dir)
    components = {**start_networks(InitConfig(preset=preset, seed=seed), "stage1_image"),
                  **load_encoders(encoders.weights, preset=encoders.preset, vae=encoders.vae,
                                  image_encoder=encoders.image_encoder)}
    return write_pipeline(components, output, {"source": f"untrained preset {preset}, seed {seed}", "ema": False})


def write_pipeline(components: dict, output: str | os.PathLike, record: dict) -> Path:
    """Save ``components`` as a pipeline folder at ``output`` (with ``anycharv_export.json`` =
    ``record``) under a temporary name, then swap it in."""
    from anycharv.model.pipeline import AnyCharVPipeline

    out = Path(output).expanduser().resolve()
    tmp = out.with_name(f".{out.name}.exporting")
    shutil.rmtree(tmp, ignore_errors=True)
    AnyCharVPipeline.from_components(components).save_pretrained(str(tmp), safe_serialization=True)
    (tmp / "anycharv_export.json").write_text(json.dumps(record, indent=1))
    if out.exists():
        old = out.with_name(f".{out.name}.replaced")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out
