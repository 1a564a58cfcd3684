"""``anycharv retrain``: one retraining round (Prefect flow ``retrain``); ``anycharv serve`` schedules it."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from anycharv.commands.pipeline import add_start_arguments

    parser = subparsers.add_parser(
        "retrain",
        help="one retraining round: new videos -> ... -> promote the new model only if it scores better",
        description=(
            "Preprocess and cache --input videos under ROOT, train stage 1 from the served model (ROOT/serving; "
            "the first round from --init/--unet2d/--preset), self-boost, train stage 2, evaluate the new and the "
            "served model on the same held-out clips and promote the new one only if it beats the served one "
            "(the link ROOT/serving is swapped atomically; ROOT/models keeps every promoted model). Overrides "
            "are prefixed by the step: two_stage.stage2.runtime.max_steps=500 promotion.min_delta=0.1."
        ),
    )
    parser.add_argument("--input", "-i", action="append", required=True, metavar="PATH",
                        help="video file, glob or folder (repeatable)")
    parser.add_argument("--root", required=True, metavar="DIR", help="folder of the rounds and the serving link")
    add_start_arguments(parser, "the first round")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anycharv.commands.pipeline import load_steps
    from anycharv.commands.preprocess import _prefect_defaults
    from anycharv.flows.retrain import RetrainJob
    from anycharv.output_paths import check_output_dir

    job = load_steps(RetrainJob, args)
    root = check_output_dir(args.root, "--root")
    _prefect_defaults()
    from anycharv.flows.retrain import retrain

    result = retrain(videos=list(args.input), root=str(root), init=args.init, unet2d=args.unet2d, preset=args.preset,
                     encoders=args.encoders, config=job)
    if result.get("skipped"):
        print(f"round skipped ({result['reason']}); serving: {result.get('serving')}")
        return 0
    verdict = "promoted" if result["promoted"] else "not promoted"
    print(f"round {result['round']}: {verdict} ({result['reason']})")
    print(f"serving: {result.get('serving') or result.get('served_model')}")
    return 0
