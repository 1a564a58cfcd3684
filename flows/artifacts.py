"""What a preprocessing run shows in the Prefect UI: a table of per-stage counts and throughput, a
table of reject reasons, and a markdown summary with small preview images.

The same markdown (with file links instead of embedded images) is written next to the manifest, so
CLI users get it too.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from anycharv.atomic import atomic_write_bytes

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif"}
THUMB_HEIGHT = 128


def stage_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stage: workers, clips in/ok/rejected, how many of them came from the stage
    cache, frames, busy seconds, frames/s."""
    rows = []
    for stage in summary.get("stages", []):
        rows.append({
            "stage": stage["name"], "workers": stage["workers"], "cpus/worker": stage["cpus_per_worker"],
            "gpus/worker": stage["gpus_per_worker"], "clips in": stage["tasks_in"], "ok": stage["tasks_ok"],
            "rejected": stage["tasks_rejected"], "from cache": stage["counters"].get("cached", 0),
            "frames": stage["units"], "busy s": round(stage["busy_s"], 2), "frames/s": round(stage["units_per_s"], 2),
        })
    rows.append({
        "stage": "end to end", "workers": None, "cpus/worker": None, "gpus/worker": None,
        "clips in": summary["clips_processed"], "ok": summary["clips_ok"], "rejected": summary["clips_rejected"],
        "from cache": None, "frames": summary["frames_processed"], "busy s": round(summary["run_s"], 2),
        "frames/s": round(summary["frames_per_s"], 2),
    })
    return rows


def reason_rows(manifest_path: str | os.PathLike) -> list[dict[str, Any]]:
    """Counts of every reject reason in the manifest, split by row kind (input or clip)."""
    table = pq.read_table(manifest_path, columns=["kind", "status", "reason"]).to_pylist()
    counts: dict[tuple[str, str], int] = {}
    for row in table:
        if row["status"] == "rejected":
            counts[(row["kind"], row["reason"])] = counts.get((row["kind"], row["reason"]), 0) + 1
    return [{"kind": k, "reason": r, "count": n} for (k, r), n in sorted(counts.items())]


def preview_files(manifest_path: str | os.PathLike, root: str | os.PathLike, limit: int = 6) -> list[tuple[str, Path]]:
    """(clip_id, image path) of the first ``limit`` ok clips that have an image annotation."""
    table = pq.read_table(manifest_path)
    ann_cols = [c for c in table.column_names if c.startswith("ann_")]
    out = []
    for row in table.to_pylist():
        if row["status"] != "ok":
            continue
        for col in ann_cols:
            rel = row.get(col)
            if rel and Path(rel).suffix.lower() in IMAGE_SUFFIXES:
                out.append((row["clip_id"], Path(root) / rel))
                break
        if len(out) >= limit:
            break
    return out


def thumbnail_data_uri(path: Path, height: int = THUMB_HEIGHT) -> str:
    """A small PNG of the image as a data URI (keeps the artifact self-contained and small)."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        width = max(1, round(img.width * height / img.height))
        img = img.resize((width, height))
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_none_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join("" if row[c] is None else str(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(summary: dict[str, Any], manifest_path: str, previews: list[tuple[str, Path]], *,
                     embed: bool) -> str:
    """Markdown summary; previews embedded as data URIs (UI) or linked relative to the manifest (file)."""
    root = Path(summary["output"])
    lines = [
        "# Preprocessing run",
        "",
        f"- output: `{root}`",
        f"- manifest: `{manifest_path}`",
        f"- config hash: `{summary['config_hash']}`",
        f"- inputs: {summary['inputs']} ({summary['inputs_rejected']} rejected, "
        f"{summary['inputs_cached']} already done)",
        f"- clips: {summary['clips_ok']} ok, {summary['clips_rejected']} rejected this run; "
        f"{summary['clips_skipped']} already done",
        f"- throughput: {summary['frames_per_s']:.2f} frames/s over {summary['run_s']:.1f} s",
        *[f"- duplicate input skipped: `{skipped}` (same bytes as `{kept}`)"
          for skipped, kept in summary.get("duplicates", {}).items()],
        *([f"- {summary['clips_short']} clip(s) shorter than `split.clip_len` (a short video or shot; "
           "column `stat_short_window`)"] if summary.get("clips_short") else []),
        "",
        "## Stages",
        "",
        _md_table(stage_rows(summary)),
        "## Reject reasons",
        "",
        _md_table(reason_rows(manifest_path)),
        "## Previews",
        "",
    ]
    if not previews:
        lines.append("_no preview images_")
    for clip_id, path in previews:
        if embed:
            target = thumbnail_data_uri(path)
        else:
            target = os.path.relpath(path, Path(manifest_path).parent)
        lines.append(f"![{clip_id}]({target})")
        lines.append(f"`{clip_id}`")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_summary_file(summary: dict[str, Any], manifest_path: str) -> Path:
    """``manifest/summary.md`` next to the manifest, with links to the preview images."""
    previews = preview_files(manifest_path, summary["output"])
    path = Path(manifest_path).parent / "summary.md"
    atomic_write_bytes(path, summary_markdown(summary, manifest_path, previews, embed=False).encode())
    return path


def publish_artifacts(summary: dict[str, Any], manifest_path: str) -> dict[str, str]:
    """Create the run's Prefect artifacts (two tables and the markdown summary); returns their keys."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    keys = {"stages": "preprocess-stages", "reasons": "preprocess-reject-reasons", "summary": "preprocess-summary"}
    create_table_artifact(table=stage_rows(summary), key=keys["stages"],
                          description="Per-stage clip counts and throughput")
    create_table_artifact(table=reason_rows(manifest_path) or [{"kind": "", "reason": "(none)", "count": 0}],
                          key=keys["reasons"], description="Rejected inputs and clips by reason")
    previews = preview_files(manifest_path, summary["output"])
    create_markdown_artifact(markdown=summary_markdown(summary, manifest_path, previews, embed=True),
                             key=keys["summary"], description="Preprocessing summary with previews")
    return keys
