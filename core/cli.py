"""The ``anycharv`` command line. Each subcommand lives in ``anycharv.commands.<name>`` and exposes
``register(subparsers)``; heavy imports happen inside the command so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

from anycharv import __version__
from anycharv.errors import AnyCharVError

COMMAND_MODULES = ["preprocess", "infer", "convert_official", "assets"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anycharv",
        description="AnyCharV character video generation: preprocessing, training and inference.",
    )
    parser.add_argument("--version", action="version", version=f"anycharv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"anycharv.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"anycharv.commands.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except AnyCharVError as exc:
        print(f"anycharv {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"anycharv {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head` that closed early: not an error of ours.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
