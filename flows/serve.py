"""Serve anycharv's flows as Prefect deployments, so they can be triggered (and scheduled) from the
Prefect UI with forms built from the typed configs.

    prefect server start                                   # or point PREFECT_API_URL at your server
    python -m anycharv.flows.serve                         # serves preprocess, cache_latents, train,
                                                           # self_boost and two_stage
    python -m anycharv.flows.serve --cron "0 3 * * *"      # ...and runs preprocessing nightly

The served process runs the flow runs itself (local Ray by default; set the flow's
``config.runtime.ray_address`` to use a cluster).
"""

from __future__ import annotations

import argparse

from prefect import serve

from anycharv.flows.cache_latents import cache_latents
from anycharv.flows.preprocess import preprocess
from anycharv.flows.self_boost import self_boost
from anycharv.flows.train import train
from anycharv.flows.two_stage import two_stage


def build_deployments(cron: str | None = None, inputs: list[str] | None = None, output: str | None = None):
    """The RunnerDeployments of the project's flows (parameters default to the embedded config)."""
    parameters = {}
    if inputs:
        parameters["inputs"] = inputs
    if output:
        parameters["output"] = output
    return [
        preprocess.to_deployment(
            name="preprocess",
            description="Raw videos in, clean annotated clips out (Parquet manifest + per-clip annotations).",
            tags=["anycharv", "preprocessing"],
            parameters=parameters,
            cron=cron,
        ),
        cache_latents.to_deployment(
            name="cache_latents",
            description="A preprocessing output's ok clips in, VAE/CLIP latent training shards out.",
            tags=["anycharv", "latent-cache"],
        ),
        train.to_deployment(
            name="train",
            description="One training stage (stage1_image, stage1_video, stage2) on a latent cache, on Ray Train.",
            tags=["anycharv", "training"],
            concurrency_limit=1,
        ),
        self_boost.to_deployment(
            name="self_boost",
            description="The stage-1 model re-generates each cached clip with another video's character.",
            tags=["anycharv", "self-boost"],
        ),
        two_stage.to_deployment(
            name="two_stage",
            description="Stage 1 image -> stage 1 video -> self-boost -> stage 2, each step resumable.",
            tags=["anycharv", "training"],
            concurrency_limit=1,
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cron", default=None, help="schedule, e.g. '0 3 * * *' (default: trigger by hand)")
    parser.add_argument("--input", action="append", default=None, help="default inputs shown in the UI form")
    parser.add_argument("--output", default=None, help="default output folder shown in the UI form")
    args = parser.parse_args(argv)
    serve(*build_deployments(args.cron, args.input, args.output))


if __name__ == "__main__":
    main()
