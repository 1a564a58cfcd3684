"""``anycharv train``: run the Prefect flow ``train`` (one stage) from the command line."""

from __future__ import annotations

import argparse

from anycharv.training.config import STAGES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one AnyCharV stage on a latent cache (Ray Train; resumable)",
        description=(
            "Train STAGE on the latent cache DATA into RUN_DIR (checkpoints, metrics.jsonl, TensorBoard logs, "
            "validation previews). Rerunning the same command resumes from the last checkpoint; a larger "
            "--max-steps continues the same run. Defaults: configs/train/STAGE.yaml; overrides are key.sub=value "
            "pairs, e.g. optim.lr=1e-5 data.batch_size=2 runtime.launcher=local."
        ),
    )
    parser.add_argument("--stage", required=True, choices=STAGES)
    parser.add_argument("--data", required=True, metavar="CACHE_DIR", help="latent cache folder (anycharv cache)")
    parser.add_argument("--output", "-o", required=True, metavar="RUN_DIR", help="run folder")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--init", metavar="DIR", help="start from a run folder, an exported folder or a release")
    start.add_argument("--preset", choices=["tiny"], help="tiny: start from small random networks")
    parser.add_argument("--max-steps", type=int, metavar="N", help="train until this optimizer step")
    parser.add_argument("--checkpoint-every", type=int, metavar="K", help="checkpoint every K steps")
    parser.add_argument("--num-workers", type=int, metavar="W", help="training workers (Ray Train ranks)")
    parser.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster; default: a local one")
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML config (default: configs/train/STAGE.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    parser.set_defaults(func=run)


def load_job(args: argparse.Namespace):
    from anycharv.config import load_job_config
    from anycharv.training.config import TrainJob

    flags = [f"train.stage={args.stage}"]
    if args.init:
        flags.append(f"train.init.model={args.init}")
    if args.preset:
        flags.append(f"train.init.preset={args.preset}")
    for flag, key in (("max_steps", "runtime.max_steps"), ("checkpoint_every", "runtime.checkpoint.every"),
                      ("num_workers", "runtime.num_workers")):
        if getattr(args, flag) is not None:
            flags.append(f"{key}={getattr(args, flag)}")
    return load_job_config(TrainJob, f"train/{args.stage}.yaml", args.config, [*args.overrides, *flags],
                           args.ray_address)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from anycharv.commands.preprocess import _prefect_defaults
    from anycharv.errors import InputError
    from anycharv.output_paths import check_output_dir
    from anycharv.training.launcher import check_data

    job = load_job(args)
    data = Path(args.data).expanduser().resolve()
    if not data.is_dir():
        raise InputError(f"--data {args.data}", "no such folder", code="no_index")
    check_data(data, job)  # before Prefect or Ray start
    output = check_output_dir(args.output, "--output")
    _prefect_defaults()
    from anycharv.flows.train import train

    result = train(data=str(data), output=str(output), config=job)
    if result.get("skipped"):
        print(f"{output}: already trained to step {result['final_step']} (raise --max-steps to continue)")
    else:
        print(f"trained {job.train.stage} to step {result['final_step']}; last loss {result['last_loss']}")
    print(f"checkpoint: {result['checkpoint']}")
    print(f"metrics:    {output}/metrics.jsonl, TensorBoard logs in {output}/tensorboard")
    return 0
