"""The flow ``retrain`` (real Prefect harness, real sample videos, tiny networks): a first round is
promoted, a round without new clips is skipped, a round with a new video trains from the served
model and is promoted only if it beats it; the decision and both scores are artifacts."""

from __future__ import annotations

import json
import os

import pytest

from anycharv.assets import asset_path


def _config(steps: list[str], min_delta: float):
    from anycharv.config import load_config
    from anycharv.flows.retrain import RetrainJob

    return load_config(RetrainJob, None, [*steps, f"promotion.min_delta={min_delta}"])


def _mirrored(video, out) -> str:
    """A new video for a later round: the first 24 frames of ``video``, mirrored."""
    from anycharv.model.video_writer import write_video
    from anycharv.preprocessing.video_io import probe_video, read_frames

    info = probe_video(str(video))
    out.parent.mkdir(parents=True)
    write_video(out, read_frames(str(video), 0, 24, None)[:, :, ::-1].copy(), info.fps)
    return str(out)


def _artifacts(flow_run_id) -> dict:
    """The artifacts of the run and of its subflow runs (evaluate's belong to the evaluate subflow)."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    async def read():
        async with get_client() as client:
            children = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
            runs = [flow_run_id, *(r.id for r in children)]
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=runs)))

    return {a.key: a for a in asyncio.run(read())}


@pytest.mark.timeout(900)
def test_rounds_promote_skip_and_keep(prefect_harness, tiny_steps, tmp_path):
    from anycharv.flows.retrain import retrain

    root = tmp_path / "retrain"
    first_videos = [str(asset_path("pose2sim_cam01.mp4")), str(asset_path("pose2sim_cam02.mp4"))]
    state = retrain(first_videos, str(root), preset="tiny", config=_config(tiny_steps, 0.0), return_state=True)
    first = state.result()
    assert first["promoted"] and first["reason"] == "no model is served yet" and first["served_score"] is None
    served = root / "serving"
    assert served.is_symlink() and os.readlink(served) == os.path.join("models", first["round_id"])
    assert (served / "model_index.json").is_file()
    artifacts = _artifacts(state.state_details.flow_run_id)
    assert {"retrain-decision", "retrain-scores", "evaluation-metrics"} <= set(artifacts)
    assert "**promoted**" in artifacts["retrain-decision"].data

    again = retrain(first_videos, str(root), config=_config(tiny_steps, 0.0))  # nothing new: the served model stays
    assert again == {"skipped": True, "reason": "no_new_clips", "serving": str(served.resolve()),
                     "clips": again["clips"]}

    # A new video: the round fine-tunes the served model; a margin no score can reach keeps it served.
    more = [*first_videos, _mirrored(asset_path("pose2sim_cam01.mp4"), tmp_path / "incoming" / "mirrored.mp4")]
    third = retrain(more, str(root), config=_config(tiny_steps, 1e9))
    assert not third["promoted"] and third["new_score"] is not None and third["served_score"] is not None
    assert third["served_model"] == str((root / "models" / first["round_id"]).resolve())
    assert os.readlink(served) == os.path.join("models", first["round_id"])  # unchanged
    record = json.loads((root / "rounds" / third["round_id"] / "round.json").read_text())
    assert record["finished"] and record["start"] == {"init": third["served_model"]}
    assert record["clips"] > json.loads((root / "rounds" / first["round_id"] / "round.json").read_text())["clips"]
    assert sorted(p.name for p in (root / "models").iterdir()) == [first["round_id"]]


def test_a_first_round_needs_a_start(prefect_harness, tiny_steps, tmp_path):
    from anycharv.errors import InputError
    from anycharv.flows.retrain import retrain

    with pytest.raises(InputError, match="nothing is served yet"):
        retrain([str(asset_path("sports2d_demo.mp4"))], str(tmp_path / "root"), config=_config(tiny_steps, 0.0))
