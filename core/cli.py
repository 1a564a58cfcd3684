"""The ``anycharv`` command line. Each subcommand lives in ``anycharv.commands.<name>`` and exposes
``register(subparsers)``; heavy imports happen inside the command so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from anycharv import __version__
from anycharv.errors import AnyCharVError

COMMAND_MODULES = ["preprocess", "cache", "train", "self_boost", "two_stage", "export", "evaluate", "infer", "batch",
                   "pipeline", "retrain", "serve", "convert_official", "assets"]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: it unwinds like Ctrl-C (Prefect records the run as
    crashed, Ray shuts down, the output stays resumable) instead of killing the process mid-write."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into ``Terminated`` while a command runs (main thread only), then restore."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


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
        with _sigterm_unwinds():
            result = args.func(args)
    except AnyCharVError as exc:
        print(f"anycharv {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"anycharv {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
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
