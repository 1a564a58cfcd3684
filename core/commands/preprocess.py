"""``anycharv preprocess``: run the Prefect flow ``preprocess`` from the command line.

No Prefect server is needed: without ``PREFECT_API_URL`` Prefect starts a temporary local API for
the run and stops it afterwards.
"""

from __future__ import annotations

import argparse
import os

DEFAULT_CONFIG = "preprocess.yaml"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "preprocess",
        help="detect, track, mask and pose people in videos; write clips and a Parquet manifest",
        description=(
            "Preprocess videos into per-clip annotations (OUTPUT/clips/<clip_id>/) and a manifest "
            "(OUTPUT/manifest/clips.parquet). Reruns skip finished work; a killed run resumes. "
            "Config overrides are key.sub=value pairs, e.g. detect.conf=0.3 runtime.num_workers=2."
        ),
    )
    parser.add_argument("--input", "-i", action="append", required=True, metavar="PATH_OR_GLOB",
                        help="video file, folder or glob (repeatable)")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--config", "-c", default=None, metavar="FILE",
                        help=f"YAML config (default: configs/{DEFAULT_CONFIG} when present)")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="join this Ray cluster ('auto', 'ray://host:10001'); default: RAY_ADDRESS or a local one")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    parser.set_defaults(func=run)


def _prefect_defaults() -> None:
    """Let Prefect run the flow against a temporary local API when no server is configured, and give
    that API time to start on a slow machine (the first start creates its database)."""
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def load_job(config: str | None, overrides: list[str], ray_address: str | None = None):
    """The typed job from the YAML file plus overrides; errors name the bad key or value."""
    from anycharv.config import CONFIG_DIR, load_config
    from anycharv.preprocessing.runtime import PreprocessJob

    path = config
    if path is None and (CONFIG_DIR / DEFAULT_CONFIG).is_file():
        path = str(CONFIG_DIR / DEFAULT_CONFIG)
    job = load_config(PreprocessJob, path, overrides)
    if ray_address:
        job.runtime.ray_address = ray_address
    return job


def run(args: argparse.Namespace) -> int:
    job = load_job(args.config, list(args.overrides), args.ray_address)
    _prefect_defaults()
    from anycharv.flows.preprocess import preprocess

    result = preprocess(inputs=list(args.input), output=args.output, config=job)
    counts = result["manifest_counts"]
    print(f"manifest: {result['manifest']}")
    print(f"summary and previews: {result['summary_md']} (clip folders under {result['output']}/clips/)")
    reasons = ", ".join(f"{k}={v}" for k, v in result["reasons"].items()) or "none"
    print(
        f"{counts['clips_ok']} clips ok, {counts['clips_rejected']} clips rejected, "
        f"{counts['inputs_rejected']} inputs rejected; this run: {result['clips_ok'] + result['clips_rejected']} "
        f"clips processed, {result['clips_skipped']} already done, {result['frames_per_s']:.2f} frames/s; "
        f"reject reasons: {reasons}"
    )
    return 0
