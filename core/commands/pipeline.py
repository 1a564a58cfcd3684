"""``anycharv pipeline``: the main job end to end (Prefect flow ``pipeline``): raw videos -> preprocess ->
cache -> two-stage training with self-boosting -> export -> evaluate -> batch inference."""

from __future__ import annotations

import argparse


def add_start_arguments(parser: argparse.ArgumentParser, first: str) -> None:
    """The start of training (``--init`` / ``--unet2d`` / ``--preset``), the cache's encoders, the
    config file, the Ray cluster and the overrides: what ``pipeline`` and ``retrain`` share."""
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--init", metavar="DIR", help=f"{first} starts from this model or run folder")
    start.add_argument("--unet2d", metavar="DIR",
                       help=f"{first} starts from SD-1.5 / sd-image-variations UNet weights")
    start.add_argument("--preset", choices=["tiny"], help="tiny: small random networks (and, without --encoders, "
                                                           "tiny random encoders for the cache)")
    parser.add_argument("--encoders", metavar="DIR", help="folder with vae/ and image_encoder/ for the latent cache")
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML with one section per step")
    parser.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster for every step; default: local")
    parser.add_argument("overrides", nargs="*", metavar="step.key=value", help="config overrides")


def load_steps(model_cls, args: argparse.Namespace):
    from anycharv.config import load_config, set_ray_address

    return set_ray_address(load_config(model_cls, args.config, list(args.overrides)), args.ray_address)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="the main job end to end: videos -> clips -> cache -> two-stage training -> evaluation -> batch "
             "inference",
        description=(
            "Preprocess --input videos into OUTPUT/preprocess, cache them (OUTPUT/cache), train both stages with "
            "self-boosting (OUTPUT/train), export OUTPUT/model, evaluate it (OUTPUT/evaluation) and replace the "
            "people of the videos with each --reference character (OUTPUT/batch). Every step resumes. Overrides "
            "are prefixed by the step: two_stage.stage2.runtime.max_steps=50 batch.batch.steps=4."
        ),
    )
    parser.add_argument("--input", "-i", action="append", required=True, metavar="PATH",
                        help="video file, glob or folder (repeatable)")
    parser.add_argument("--reference", "-r", action="append", required=True, metavar="IMAGE",
                        help="reference character image for the batch step (repeatable)")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    add_start_arguments(parser, "training")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anycharv.commands.preprocess import _prefect_defaults
    from anycharv.errors import InputError
    from anycharv.output_paths import check_output_dir
    from anycharv.preprocessing.inputs import require_inputs

    if not (args.init or args.unet2d or args.preset):
        raise InputError("--init", "give --init MODEL_DIR, --unet2d SD_UNET_DIR or --preset tiny", code="no_init")
    from anycharv.flows.pipeline import PipelineJob

    job = load_steps(PipelineJob, args)
    require_inputs(args.input)  # before Prefect or Ray start
    output = check_output_dir(args.output, "--output")
    _prefect_defaults()
    from anycharv.flows.pipeline import pipeline

    s = pipeline(videos=list(args.input), references=list(args.reference), output=str(output), init=args.init,
                 unet2d=args.unet2d, preset=args.preset, encoders=args.encoders, config=job)
    print_summary(s)
    return 0


def print_summary(s: dict) -> None:
    print(f"manifest:   {s['manifest']} ({s['clips_ok']} clips ok)")
    print(f"cache:      {s['cache_dir']} ({s['cache_samples']} samples, splits {s['cache_splits']})")
    for name, run_dir in s["runs"].items():
        print(f"training:   {run_dir} ({name}: metrics.jsonl, checkpoints/, validation/)")
    print(f"self-boost: {s['self_boost']}")
    print(f"model:      {s['model']}")
    ev = s["evaluation"]
    start = s.get("evaluation_start")
    versus = f" (untrained start: {start['score']})" if start else ""
    print(f"evaluation: {s['evaluation_dir']} ({ev['metric']} {ev['score']}{versus})")
    print(f"batch:      {s['batch_results']} ({s['batch_ok']} of {s['batch_jobs']} jobs ok)")
    for video, preview in zip(s["batch_outputs"], s["batch_previews"]):
        print(f"            {video}  (preview {preview})")
    print(f"summary:    {s['output']}/pipeline-summary.json")
