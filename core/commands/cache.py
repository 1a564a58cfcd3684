"""``anycharv cache``: run the Prefect flow ``cache_latents`` from the command line."""

from __future__ import annotations

import argparse

DEFAULT_CONFIG = "cache.yaml"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="encode a preprocessing output's clips with the VAE and CLIP into WebDataset training shards",
        description=(
            "Cache the ok clips of a preprocessing output (PREP_DIR) as training samples: VAE latents, masked "
            "stage-1 inputs, masks, pose and CLIP reference embeddings, in OUTPUT/shards/ with "
            "OUTPUT/shards/index.parquet. Reruns keep finished shards; a killed run resumes. Overrides are "
            "key.sub=value pairs, e.g. cache.mask_variants=3 runtime.executor=local."
        ),
    )
    parser.add_argument("--input", "-i", required=True, metavar="PREP_DIR", help="preprocessing output folder")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="cache output folder")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--weights", metavar="DIR_OR_HUB_ID",
                     help="folder with vae/ and image_encoder/ (ours, sd-image-variations-diffusers) or an "
                          "official AnyCharV release")
    src.add_argument("--preset", choices=["tiny"], help="tiny: random tiny encoders (tests, demos)")
    parser.add_argument("--vae", metavar="PATH", help="diffusers AutoencoderKL folder (e.g. sd-vae-ft-mse)")
    parser.add_argument("--image-encoder", metavar="PATH", help="CLIPVisionModelWithProjection folder")
    parser.add_argument("--config", "-c", default=None, metavar="FILE",
                        help=f"YAML config (default: configs/{DEFAULT_CONFIG} when present)")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="join this Ray cluster ('auto', 'ray://host:10001'); default: RAY_ADDRESS or a local one")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    parser.set_defaults(func=run)


def load_job(config: str | None, overrides: list[str], ray_address: str | None = None):
    from anycharv.config import load_job_config
    from anycharv.latent_cache.config import CacheJob

    return load_job_config(CacheJob, DEFAULT_CONFIG, config, overrides, ray_address)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from anycharv.commands.preprocess import _prefect_defaults
    from anycharv.errors import InputError
    from anycharv.output_paths import check_output_dir

    if not args.weights and not args.preset and not (args.vae and args.image_encoder):
        raise InputError("--weights", "give --weights DIR, --vae and --image-encoder, or --preset tiny")
    job = load_job(args.config, list(args.overrides), args.ray_address)
    manifest = Path(args.input).expanduser() / "manifest" / "clips.parquet"
    if not manifest.is_file():
        raise InputError(f"--input {args.input}", "no manifest/clips.parquet here (run `anycharv preprocess` first)",
                         code="no_manifest")
    output = check_output_dir(args.output, "--output")  # before Prefect or Ray start
    _prefect_defaults()
    from anycharv.flows.cache_latents import cache_latents

    result = cache_latents(input=str(Path(args.input).expanduser().resolve()), output=str(output),
                           weights=args.weights, preset=args.preset, vae=args.vae,
                           image_encoder=args.image_encoder, config=job)
    rejected = ", ".join(f"{k}={v}" for k, v in result["rejected"].items()) or "none"
    print(f"index: {output}/shards/index.parquet ({result['samples']} samples in {result['shards']} shards, "
          f"{result['bytes_per_sample'] / 1e6:.2f} MB per sample; splits {result['splits']})")
    print(f"this run: {result['encoded']} clips encoded, {result['reused']} reused, "
          f"{result['clips_per_s']} clips/s; rejected: {rejected}")
    if result.get("preview"):
        print(f"preview: {result['preview']}")
    return 0
