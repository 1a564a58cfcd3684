"""``anycharv two-stage``: run the Prefect flow ``two_stage`` (stage 1 image -> stage 1 video ->
self-boost -> stage 2) from the command line."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "two-stage",
        help="train both AnyCharV stages with self-boosting on a latent cache (each step resumable)",
        description=(
            "Train stage 1 (image, then video), generate the self-boost pairs with it, and train stage 2, into "
            "OUTPUT/stage1_image, OUTPUT/stage1_video, OUTPUT/stage2 (pairs in DATA/shards/boost). Rerunning "
            "resumes; finished steps are skipped. Overrides are prefixed by the step: "
            "stage1_image.runtime.max_steps=500 self_boost.boost.steps=10 stage2.train.optim.lr=1e-5."
        ),
    )
    parser.add_argument("--data", required=True, metavar="CACHE_DIR", help="latent cache folder (anycharv cache)")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="folder of the three runs")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--init", metavar="DIR", help="stage 1 starts from this model or run folder")
    start.add_argument("--unet2d", metavar="DIR", help="stage 1 starts from SD-1.5 / sd-image-variations UNet weights")
    start.add_argument("--preset", choices=["tiny"], help="stage 1 starts from small random networks")
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML with sections stage1_image, stage1_video, "
                                                              "self_boost, stage2")
    parser.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster; default: a local one")
    parser.add_argument("overrides", nargs="*", metavar="step.key=value", help="config overrides")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from anycharv.commands.preprocess import _prefect_defaults
    from anycharv.config import load_config
    from anycharv.errors import InputError
    from anycharv.output_paths import check_output_dir
    from anycharv.training.launcher import check_data

    if not (args.init or args.unet2d or args.preset):
        raise InputError("--init", "give --init MODEL_DIR, --unet2d SD_UNET_DIR or --preset tiny", code="no_init")
    from anycharv.flows.two_stage import TwoStageJob

    job = load_config(TwoStageJob, args.config, list(args.overrides))
    if args.ray_address:
        for step in (job.stage1_image, job.stage1_video, job.self_boost, job.stage2):
            step.runtime.ray_address = args.ray_address
    data = Path(args.data).expanduser().resolve()
    check_data(data, job.stage1_image)  # before Prefect or Ray start
    output = check_output_dir(args.output, "--output")
    _prefect_defaults()
    from anycharv.flows.two_stage import two_stage

    result = two_stage(data=str(data), output=str(output), init=args.init, preset=args.preset, unet2d=args.unet2d,
                       config=job)
    for name in ("stage1_image", "stage1_video", "stage2"):
        step = result[name]
        state = "already complete" if step.get("skipped") else f"trained to step {step.get('final_step')}"
        print(f"{name}: {result['runs'][name]} ({state}; last loss {step.get('last_loss')})")
    print(f"self-boost: {result['self_boost'].get('output')} ({result['self_boost'].get('samples')} pairs)")
    print(f"final model: {result['final_model']} (anycharv export {result['final_model']} OUT)")
    return 0
