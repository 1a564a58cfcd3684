"""``anycharv preprocess``: run the Prefect flow ``preprocess`` from the command line.

No Prefect server is needed: without ``PREFECT_API_URL`` a temporary local API is started for the
run, in its own session, and stopped afterwards (``anycharv.flows.prefect_local``). Bad settings,
outputs and inputs are refused before it starts.
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
    parser.add_argument("--input", "-i", action="append", metavar="PATH_OR_GLOB",
                        help="video file, folder or glob (repeatable; required unless --gc)")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--config", "-c", default=None, metavar="FILE",
                        help=f"YAML config (default: configs/{DEFAULT_CONFIG} when present)")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="join this Ray cluster ('auto', 'ray://host:10001'); default: RAY_ADDRESS or a local one")
    parser.add_argument("--gc", action="store_true",
                        help="list what the current manifest of OUTPUT does not reference (clips of earlier configs, "
                             "their records and stage-cache entries, unfinished work); with --yes, remove it. "
                             "Do not run it while a run writes to OUTPUT.")
    parser.add_argument("--yes", action="store_true", help="with --gc: remove what it lists")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    parser.set_defaults(func=run)


def _prefect_defaults() -> None:
    """Without a configured Prefect API (environment, profile, or an active test harness), start a
    temporary local one for this run in its own session, so that Ctrl-C or SIGTERM stops the run
    while the API it reports to stays up (``anycharv.flows.prefect_local``). The first start
    creates the database under PREFECT_HOME: allow it time on a slow machine."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from anycharv.flows.prefect_local import ensure_api

    ensure_api(float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 180))


def load_job(config: str | None, overrides: list[str], ray_address: str | None = None):
    """The typed job from the YAML file plus overrides; errors name the bad key or value."""
    from anycharv.config import load_job_config
    from anycharv.preprocessing.runtime import PreprocessJob

    return load_job_config(PreprocessJob, DEFAULT_CONFIG, config, overrides, ray_address)


def garbage_collect(output: str, remove: bool) -> int:
    from anycharv.preprocessing.cleanup import find_unreferenced, remove_unreferenced
    from anycharv.preprocessing.finalize import OutputLayout

    layout = OutputLayout.at(output)
    found = find_unreferenced(layout)
    for line in found.lines():
        print(line)
    if found.empty:
        print(f"{layout.root}: nothing unreferenced")
    elif remove:
        print(f"removed {remove_unreferenced(layout, found)} item(s)")
    else:
        print(f"{len(found.lines())} item(s) not referenced by {layout.manifest_path}; --gc --yes removes them")
    return 0


def run(args: argparse.Namespace) -> int:
    from anycharv.errors import InputError
    from anycharv.output_paths import check_output_dir

    if args.gc:
        return garbage_collect(args.output, args.yes)
    if not args.input:
        raise InputError("--input", "required (a video file, folder or glob)")
    job = load_job(args.config, list(args.overrides), args.ray_address)
    output = check_output_dir(args.output, "--output")  # before Prefect or Ray start
    from anycharv.preprocessing.inputs import require_inputs

    require_inputs(args.input)
    _prefect_defaults()
    from anycharv.flows.preprocess import preprocess

    result = preprocess(inputs=list(args.input), output=str(output), config=job)
    counts = result["manifest_counts"]
    print(f"manifest: {result['manifest']}")
    print(f"summary and previews: {result['summary_md']} (clip folders under {result['output']}/clips/)")
    reasons = ", ".join(f"{k}={v}" for k, v in result["manifest_reasons"].items()) or "none"
    duplicates = f", {len(result['duplicates'])} duplicate input(s) skipped" if result["duplicates"] else ""
    short = f", {result['clips_short']} clip(s) shorter than split.clip_len" if result["clips_short"] else ""
    print(
        f"{counts['clips_ok']} clips ok, {counts['clips_rejected']} clips rejected, "
        f"{counts['inputs_rejected']} inputs rejected; this run: {result['clips_ok'] + result['clips_rejected']} "
        f"clips processed, {result['clips_skipped']} already done{duplicates}{short}, "
        f"{result['frames_per_s']:.2f} frames/s; reject reasons (manifest): {reasons}"
    )
    for skipped, kept in result["duplicates"].items():
        print(f"  duplicate skipped: {skipped} (same bytes as {kept})")
    if counts["clips_ok"] + counts["clips_rejected"] == 0:
        raise InputError("--input", f"no usable input: every input was rejected ({reasons}); "
                                    f"the reasons are in {result['manifest']}", code="no_usable_input")
    return 0
