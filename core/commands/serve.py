"""``anycharv serve``: serve every flow as a Prefect deployment from this host (``anycharv.flows.serve``)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from anycharv.flows.serve import add_arguments

    parser = subparsers.add_parser(
        "serve",
        help="serve all flows as Prefect deployments (trigger and schedule them from the UI)",
        description=(
            "Register the deployments preprocess, cache_latents, train, self_boost, two_stage, evaluate, retrain, "
            "batch_infer and pipeline with the Prefect server at PREFECT_API_URL and run their flow runs here until "
            "interrupted. Start a server first: prefect server start, then export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anycharv.flows.serve import serve_all

    serve_all(args)
    return 0
