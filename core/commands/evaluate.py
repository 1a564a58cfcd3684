"""``anycharv evaluate``: run the Prefect flow ``evaluate`` from the command line."""

from __future__ import annotations

import argparse

DEFAULT_CONFIG = "evaluate.yaml"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on held-out clips of a latent cache (self-reconstruction: PSNR, SSIM, L1, ...)",
        description=(
            "Reconstruct held-out clips of the latent cache CACHE_DIR (its val split) with the model: each clip's "
            "own character as the reference, its pose and the box-mask condition, sampled as inference samples; "
            "compare with the clip's frames (its cached latents decoded). PSNR, SSIM and L1 over the frame and "
            "inside / outside the mask are always computed; LPIPS, CLIP-I, DINO-I, FID and FVD when their weights "
            "are given as local files (eval.lpips_weights + eval.lpips_backbone, eval.clip_weights, "
            "eval.dino_weights, eval.fid_weights, eval.fvd_weights; nothing is downloaded). Writes "
            "clips.parquet, aggregate.parquet, summary.json and previews/ under --output. Overrides are "
            "key.sub=value pairs, e.g. eval.steps=10 eval.num_clips=8 runtime.executor=local."
        ),
    )
    parser.add_argument("--model", "-m", required=True, metavar="DIR",
                        help="the model: an exported folder, a training run (its latest checkpoint) or a checkpoint")
    parser.add_argument("--data", "-d", required=True, metavar="CACHE_DIR",
                        help="latent cache folder (`anycharv cache`)")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--config", "-c", default=None, metavar="FILE",
                        help=f"YAML config (default: configs/{DEFAULT_CONFIG} when present)")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="join this Ray cluster ('auto', 'ray://host:10001'); default: RAY_ADDRESS or a local one")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    parser.set_defaults(func=run)


def load_job(config: str | None, overrides: list[str], ray_address: str | None = None):
    from anycharv.config import load_job_config
    from anycharv.evaluation.config import EvalJob

    return load_job_config(EvalJob, DEFAULT_CONFIG, config, overrides, ray_address)


def run(args: argparse.Namespace) -> int:
    from anycharv.commands.preprocess import _prefect_defaults
    from anycharv.errors import InputError
    from anycharv.evaluation.runner import check_inputs

    job = load_job(args.config, list(args.overrides), args.ray_address)
    inputs = check_inputs(job, args.model, args.data, args.output, names=("--model", "--data", "--output"))
    _prefect_defaults()
    from anycharv.flows.evaluate import evaluate

    result = evaluate(model=str(inputs.model_dir), data=str(inputs.cache_dir), output=str(inputs.output), config=job)
    rejected = ", ".join(f"{k}={v}" for k, v in result["rejected"].items()) or "none"
    print(f"scored {result['clips']} of {result['planned']} {result['split_used']} clips of {result['data']} "
          f"with {result['model']}; rejected: {rejected}")
    for name in result["metrics_available"]:
        value = result["aggregate"].get(name)
        shown = "n/a" if value is None else f"{value:.4f}"
        primary = "  <- primary" if name == result["metric"] else ""
        print(f"  {name:<13} {shown:>12}  (n={result['samples'].get(name, 0)}){primary}")
    for name, why in result["metrics_skipped"].items():
        print(f"  {name:<13} {'skipped':>12}  {why}")
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    print(f"per clip: {result['clips_parquet']}; aggregate: {result['aggregate_parquet']}")
    for path in result["previews"]:
        print(f"preview: {path}")
    if not result["clips"]:
        raise InputError("--data", f"no clip could be scored ({rejected}); the reasons are in "
                         f"{result['clips_parquet']}", code="nothing_scored")
    return 0
