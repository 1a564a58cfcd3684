"""``anycharv export``: a training run -> a pipeline folder for ``anycharv infer --weights``."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="turn a training run (its latest checkpoint) into a pipeline folder for inference",
        description=(
            "Write OUT as a complete AnyCharVPipeline folder (from_pretrained, anycharv infer --weights OUT) from "
            "RUN_DIR's latest checkpoint (or a checkpoint folder). The VAE and image encoder are the ones the "
            "run's cache was made with unless given."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder or checkpoint folder")
    parser.add_argument("out", metavar="OUT", help="pipeline folder to write")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights")
    parser.add_argument("--vae", metavar="PATH", help="AutoencoderKL folder")
    parser.add_argument("--image-encoder", metavar="PATH", help="CLIPVisionModelWithProjection folder")
    parser.add_argument("--weights", metavar="DIR", help="folder with vae/ and image_encoder/")
    parser.add_argument("--preset", choices=["tiny"], help="tiny random encoders")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anycharv.output_paths import check_output_dir
    from anycharv.training.export import export_model

    out = check_output_dir(args.out, "OUT")
    path = export_model(args.run_dir, out, ema=args.ema, vae=args.vae, image_encoder=args.image_encoder,
                        weights=args.weights, preset=args.preset)
    print(f"exported: {path} (anycharv infer --weights {path} ...)")
    return 0
