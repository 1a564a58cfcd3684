"""``anycharv self-boost``: run the Prefect flow ``self_boost`` from the command line."""

from __future__ import annotations

import argparse

DEFAULT_CONFIG = "self_boost.yaml"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "self-boost",
        help="re-generate a latent cache's clips with the stage-1 model and other videos' characters (stage-2 data)",
        description=(
            "For each clip of the latent cache CACHE_DIR, take the character of a clip of another source video, "
            "run the stage-1 model on the clip's fine mask, masked frames and pose, and store the generated "
            "video's VAE latents as self-boost shards (default CACHE_DIR/shards/boost, where `anycharv train "
            "--stage stage2 --data CACHE_DIR` finds them), with preview mp4s of a few pairs. Reruns keep "
            "finished shards; a killed run resumes. Overrides are key.sub=value pairs, e.g. boost.steps=30 "
            "runtime.executor=local."
        ),
    )
    parser.add_argument("--data", "-d", required=True, metavar="CACHE_DIR",
                        help="latent cache folder (`anycharv cache`)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", "-m", metavar="DIR",
                     help="stage-1 model: a training run folder (its latest checkpoint), a checkpoint or an "
                          "exported folder")
    src.add_argument("--preset", metavar="NAME", help="tiny: random tiny networks (tests, demos)")
    parser.add_argument("--output", "-o", default=None, metavar="DIR",
                        help="output folder (default: CACHE_DIR/shards/boost)")
    parser.add_argument("--vae", metavar="PATH", help="diffusers AutoencoderKL folder instead of the cache's VAE")
    parser.add_argument("--config", "-c", default=None, metavar="FILE",
                        help=f"YAML config (default: configs/{DEFAULT_CONFIG} when present)")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="join this Ray cluster ('auto', 'ray://host:10001'); default: RAY_ADDRESS or a local one")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    parser.set_defaults(func=run)


def load_job(config: str | None, overrides: list[str], ray_address: str | None = None):
    from anycharv.config import load_job_config
    from anycharv.self_boost.config import BoostJob

    return load_job_config(BoostJob, DEFAULT_CONFIG, config, overrides, ray_address)


def check_inputs(args: argparse.Namespace):
    """Everything that can be checked before Prefect or Ray start: the model, the cache, its
    encoders, that the two fit, the VAE folder and the output. Returns (data, output)."""
    from pathlib import Path

    from anycharv.errors import InputError
    from anycharv.latent_cache.identity import cache_encoder_source
    from anycharv.output_paths import check_output_dir
    from anycharv.self_boost.layout import default_output
    from anycharv.self_boost.model_source import resolve_model, vae_identity
    from anycharv.self_boost.plan import read_cache_clips
    from anycharv.self_boost.runner import check_model_fits

    model = resolve_model(args.model, args.preset)
    data = Path(args.data).expanduser().resolve()
    if not data.is_dir():
        raise InputError(f"--data {args.data}", "no such folder (give a latent cache made by `anycharv cache`)",
                         code="no_cache")
    try:
        read_cache_clips(data)
    except InputError as exc:
        raise InputError(f"--data {args.data}", exc.reason, code=exc.code) from exc
    cache_encoder_source(data)
    check_model_fits(data, model)
    vae_identity(args.vae)
    return data, check_output_dir(args.output or default_output(data), "--output")


def run(args: argparse.Namespace) -> int:
    from anycharv.commands.preprocess import _prefect_defaults

    job = load_job(args.config, list(args.overrides), args.ray_address)
    data, output = check_inputs(args)
    _prefect_defaults()
    from anycharv.flows.self_boost import self_boost

    result = self_boost(data=str(data), model=args.model, preset=args.preset, output=str(output), vae=args.vae,
                        config=job)
    rejected = ", ".join(f"{k}={v}" for k, v in result["rejected"].items()) or "none"
    print(f"index: {output}/index.parquet ({result['samples']} samples in {result['shards']} shards; "
          f"splits {result['splits']})")
    print(f"this run: {result['generated']} clips generated, {result['reused']} reused, "
          f"{result['clips_per_s']} clips/s; rejected: {rejected}")
    for path in result["previews"]:
        print(f"preview: {path}")
    return 0
