"""Serve every anycharv flow as a Prefect deployment from one process, so they can be triggered (and
scheduled) from the Prefect UI with forms built from the typed configs.

    prefect server start                      # or point PREFECT_API_URL at your server
    anycharv serve                            # all nine flows; retrain every Sunday at 03:00
    anycharv serve --retrain-cron "0 3 * * *" --retrain-videos '/data/incoming/*.mp4' --retrain-root /data/retrain

The served process runs the flow runs itself (local Ray by default; set a flow's
``config...runtime.ray_address`` to use a cluster). ``prefect.yaml`` declares the same deployments
for ``prefect deploy`` and a worker pool instead.
"""

from __future__ import annotations

import argparse

DEFAULT_RETRAIN_CRON = "0 3 * * 0"
DEFAULT_RETRAIN_VIDEOS = "incoming/*.mp4"
DEFAULT_RETRAIN_ROOT = "retrain"
TRAINING_FLOWS = ("train", "two_stage", "retrain", "pipeline")  # one run at a time: they take the machine


def build_deployments(cron: str | None = None, inputs: list[str] | None = None, output: str | None = None,
                      retrain_cron: str | None = DEFAULT_RETRAIN_CRON, retrain_videos: list[str] | None = None,
                      retrain_root: str | None = None):
    """The RunnerDeployments of the project's flows (parameters default to the embedded configs).
    ``cron`` schedules preprocessing (with ``inputs``/``output``); ``retrain_cron`` the retrain round
    on ``retrain_videos`` under ``retrain_root`` (None: retrain is triggered by hand)."""
    from anycharv.flows.batch_infer import batch_infer
    from anycharv.flows.cache_latents import cache_latents
    from anycharv.flows.evaluate import evaluate
    from anycharv.flows.pipeline import pipeline
    from anycharv.flows.preprocess import preprocess
    from anycharv.flows.retrain import retrain
    from anycharv.flows.self_boost import self_boost
    from anycharv.flows.train import train
    from anycharv.flows.two_stage import two_stage

    parameters = {}
    if inputs:
        parameters["inputs"] = inputs
    if output:
        parameters["output"] = output
    retrain_parameters = {"videos": retrain_videos or [DEFAULT_RETRAIN_VIDEOS],
                          "root": retrain_root or DEFAULT_RETRAIN_ROOT}
    flows = [
        (preprocess, "preprocess", "Raw videos in, clean annotated clips out (Parquet manifest + per-clip "
                                   "annotations).", ["preprocessing"], {"parameters": parameters, "cron": cron}),
        (cache_latents, "cache_latents", "A preprocessing output's ok clips in, VAE/CLIP latent training shards "
                                         "out.", ["latent-cache"], {}),
        (train, "train", "One training stage (stage1_image, stage1_video, stage2) on a latent cache, on Ray Train.",
         ["training"], {}),
        (self_boost, "self_boost", "The stage-1 model re-generates each cached clip with another video's "
                                   "character.", ["self-boost"], {}),
        (two_stage, "two_stage", "Stage 1 image -> stage 1 video -> self-boost -> stage 2, each step resumable.",
         ["training"], {}),
        (evaluate, "evaluate", "Self-reconstruction scores (PSNR, SSIM, L1 in and outside the mask; feature "
                               "metrics with local weights) of a model on held-out clips.", ["evaluation"], {}),
        (retrain, "retrain", "New videos -> preprocess -> cache -> stage 1 from the served model -> self-boost -> "
                             "stage 2 -> evaluate -> promote only if better.", ["training", "operations"],
         {"parameters": retrain_parameters, "cron": retrain_cron}),
        (batch_infer, "batch_infer", "A job table (reference, video, ...) in, one replaced-character video per "
                                     "job out, with per-job results.", ["inference"], {}),
        (pipeline, "pipeline", "The main job end to end: raw videos -> ... -> batch inference with the new "
                               "model.", ["operations"], {}),
    ]
    return [
        flow.to_deployment(name=name, description=description, tags=["anycharv", *tags],
                           concurrency_limit=1 if name in TRAINING_FLOWS else None, **extra)
        for flow, name, description, tags, extra in flows
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cron", default=None, help="preprocessing schedule, e.g. '0 3 * * *' (default: by hand)")
    parser.add_argument("--input", action="append", default=None, help="default preprocessing inputs in the form")
    parser.add_argument("--output", default=None, help="default preprocessing output folder in the form")
    parser.add_argument("--retrain-cron", default=DEFAULT_RETRAIN_CRON,
                        help=f"retrain schedule (default {DEFAULT_RETRAIN_CRON!r}: Sundays 03:00; 'off': by hand)")
    parser.add_argument("--retrain-videos", action="append", default=None, metavar="GLOB",
                        help=f"videos of the scheduled retrain rounds (default {DEFAULT_RETRAIN_VIDEOS!r})")
    parser.add_argument("--retrain-root", default=None, metavar="DIR",
                        help=f"folder of the retrain rounds and the serving link (default {DEFAULT_RETRAIN_ROOT!r})")


def serve_all(args: argparse.Namespace) -> None:
    """Register the deployments and run their flow runs until interrupted (a configured Prefect API
    is required: deployments on a temporary one would vanish with it)."""
    import os

    from prefect import serve
    from prefect.settings import get_current_settings

    from anycharv.errors import InputError

    if not os.environ.get("PREFECT_API_URL") and not get_current_settings().api.url:
        raise InputError("PREFECT_API_URL", "not set: serving needs a running Prefect server (prefect server start; "
                         "export PREFECT_API_URL=http://127.0.0.1:4200/api)", code="no_prefect_api")

    retrain_cron = None if args.retrain_cron in (None, "", "off") else args.retrain_cron
    serve(*build_deployments(args.cron, args.input, args.output, retrain_cron, args.retrain_videos,
                             args.retrain_root))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    serve_all(parser.parse_args(argv))


if __name__ == "__main__":
    main()
