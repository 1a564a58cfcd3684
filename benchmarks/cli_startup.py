"""What a CLI command costs before and around its work: Python start-up and imports, the temporary
Prefect API, and a whole flow run with almost no work, with and without a running server.

Figures (median of ``--repeat`` runs, side by side in one run):

- ``help_s``: ``anycharv --help`` (interpreter start, every command module's argument parser);
- ``temporary_api_cold_s`` / ``temporary_api_warm_s``: starting the temporary API on a new
  PREFECT_HOME (the database is created) and on an existing one;
- ``flow_run_temporary_api_s``: ``anycharv preprocess`` on one unreadable input (the flow runs, the
  input becomes a rejected manifest row; in-process executor, so no Ray) with no Prefect configured:
  the command starts and stops a temporary API;
- ``flow_run_running_server_s``: the same command with ``PREFECT_API_URL`` pointing at a running
  ``prefect server start``: the server is reused, nothing is started;
- ``temporary_api_overhead_s``: their difference, what setting PREFECT_API_URL saves per command.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_env import machine_info

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "ops"))  # the tests' real-server helpers

from ops_servers import prefect_server  # noqa: E402

ANYCHARV = [sys.executable, "-m", "anycharv.cli"]


def _timed(cmd: list[str], env: dict, codes: tuple[int, ...] = (0,)) -> float:
    started = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode not in codes:
        raise RuntimeError(f"{cmd}: exit {result.returncode}\n{result.stderr[-2000:]}")
    return seconds


def _api_start(home: Path) -> float:
    code = ("import time; from anycharv.flows.prefect_local import TemporaryApi; api = TemporaryApi(); "
            "t = time.perf_counter(); api.start(180); print(time.perf_counter() - t); api.stop()")
    env = dict(os.environ, PREFECT_HOME=str(home))
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _flow_command(work: Path, i: int) -> list[str]:
    bad = work / "unreadable.mp4"
    bad.write_bytes(b"not a video")
    return [*ANYCHARV, "preprocess", "--input", str(bad), "--output", str(work / f"out-{i}"),
            "runtime.executor=local", "runtime.progress=false"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    figures: dict[str, list[float]] = {k: [] for k in ("help_s", "temporary_api_cold_s", "temporary_api_warm_s",
                                                       "flow_run_temporary_api_s", "flow_run_running_server_s")}
    with tempfile.TemporaryDirectory(prefix="anycharv-cli-bench-") as tmp:
        work = Path(tmp)
        home = work / "home"
        for i in range(args.repeat):
            figures["help_s"].append(_timed([*ANYCHARV, "--help"], env))
            figures["temporary_api_cold_s"].append(_api_start(work / f"cold-{i}"))
            figures["temporary_api_warm_s"].append(_api_start(home))
        run_env = dict(env, PREFECT_HOME=str(home))
        with prefect_server(work / "server-home") as server_env:
            for i in range(args.repeat):  # interleaved, so both see the same machine load
                # exit 1 is the command's answer: its only input was rejected (the row is written)
                figures["flow_run_temporary_api_s"].append(_timed(_flow_command(work, 2 * i), run_env, (1,)))
                figures["flow_run_running_server_s"].append(_timed(_flow_command(work, 2 * i + 1), server_env, (1,)))
    medians = {k: round(statistics.median(v), 3) for k, v in figures.items()}
    medians["temporary_api_overhead_s"] = round(medians["flow_run_temporary_api_s"]
                                                - medians["flow_run_running_server_s"], 3)
    report = {"benchmark": "cli_startup", "repeat": args.repeat, "median": medians,
              "runs": {k: [round(x, 3) for x in v] for k, v in figures.items()},
              "machine": machine_info(["prefect", "ray", "torch"])}
    print(json.dumps(report["median"], indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
