"""``anycharv batch``: run the Prefect flow ``batch_infer`` on a job table from the command line."""

from __future__ import annotations

import argparse

DEFAULT_CONFIG = "batch.yaml"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch", help="replace people in many videos: one job per row of a CSV/Parquet table",
        description=(
            "Run every row of the job table FILE (CSV, TSV or Parquet with columns job_id, reference, video and "
            "optional person, steps, guidance, seed, size, start, max_frames, output) like `anycharv infer`, on "
            "the executor's workers, which load the pipeline once. Writes DIR/videos/<output> (default "
            "<job_id>.mp4, at the source fps, with the source's audio), DIR/previews/<job_id>.png and "
            "DIR/results.parquet (one row per job: status ok|rejected|failed, reason, detail, output, seconds, "
            "frames). A bad row is rejected and the others run; a rerun skips finished jobs whose row and inputs "
            "are unchanged. Overrides are key.sub=value pairs, e.g. batch.steps=20 runtime.executor=local."
        ),
    )
    parser.add_argument("--jobs", "-j", required=True, metavar="FILE", help="job table (.csv, .tsv, .parquet)")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--weights", metavar="DIR_OR_HUB_ID",
                     help="converted component folders (anycharv convert-official), or an official AnyCharV "
                          "release folder / hub id")
    src.add_argument("--preset", choices=["tiny"], help="tiny: random tiny weights (runs anywhere, meaningless)")
    parser.add_argument("--vae", metavar="PATH", help="diffusers AutoencoderKL folder (official releases lack one)")
    parser.add_argument("--image-encoder", metavar="PATH", help="CLIPVisionModelWithProjection folder (ditto)")
    parser.add_argument("--config", "-c", default=None, metavar="YAML",
                        help=f"YAML config (default: configs/{DEFAULT_CONFIG} when present)")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="join this Ray cluster ('auto', 'ray://host:10001'); default: RAY_ADDRESS or a local one")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    parser.set_defaults(func=run)


def load_job(args: argparse.Namespace):
    from anycharv.config import load_job_config
    from anycharv.inference.batch_config import BatchJob

    job = load_job_config(BatchJob, DEFAULT_CONFIG, args.config, list(args.overrides), args.ray_address)
    updates = {name: getattr(args, name) for name in ("vae", "image_encoder") if getattr(args, name)}
    if updates:
        job.batch = job.batch.model_copy(update=updates)
    return job


def check_inputs(args: argparse.Namespace, job):
    """What fails the whole run, checked before Prefect or Ray start: the model, the job table (readable,
    with the required columns) and the output folder. Returns (table, output)."""
    from anycharv.errors import InputError
    from anycharv.inference.batch_jobs import read_job_table
    from anycharv.inference.batch_runner import check_model, check_model_files
    from anycharv.output_paths import check_output_dir

    check_model(args.weights, args.preset)
    check_model_files(job)
    try:
        table = read_job_table(args.jobs)
    except InputError as exc:
        raise InputError(f"--jobs {args.jobs}", exc.reason, code=exc.code) from exc
    return table, check_output_dir(args.output, "--output")


def run(args: argparse.Namespace) -> int:
    import sys

    from anycharv.commands.preprocess import _prefect_defaults
    from anycharv.errors import InputError

    job = load_job(args)
    table, output = check_inputs(args, job)
    if args.preset == "tiny":
        from anycharv.commands.infer import RANDOM_WEIGHTS_WARNING

        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr, flush=True)
    _prefect_defaults()
    from anycharv.flows.batch_infer import batch_infer

    result = batch_infer(jobs=table.path, output=str(output), weights=args.weights, preset=args.preset, config=job)
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(result["reasons"].items())) or "none"
    print(f"results: {result['results']}")
    print(f"{result['jobs']} jobs: {result['ok']} ok, {result['rejected']} rejected, {result['failed']} failed, "
          f"{result['reused']} already done; this run: {result['ran']} jobs, {result['frames']} frames, "
          f"{result['jobs_per_hour']} jobs/h; reasons: {reasons}")
    print(f"videos under {output}/videos/, previews under {output}/previews/")
    if table.ignored_columns:
        print(f"ignored column(s): {', '.join(table.ignored_columns)}")
    if result["ok"] == 0:
        raise InputError(f"--jobs {args.jobs}", f"no job finished ({reasons}); the reasons are in "
                                                f"{result['results']}", code="no_job_done")
    return 0
