"""The served deployments and prefect.yaml: every flow, typed forms, the schedules and the one-at-a-time
training flows, the same in both."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from anycharv.flows.serve import DEFAULT_RETRAIN_CRON, TRAINING_FLOWS, build_deployments

REPO = Path(__file__).resolve().parents[2]
FLOWS = ["preprocess", "cache_latents", "train", "self_boost", "two_stage", "evaluate", "retrain", "batch_infer",
         "pipeline"]


def _schema(deployment) -> dict:
    schema = deployment._parameter_openapi_schema
    return schema.model_dump() if hasattr(schema, "model_dump") else dict(schema)


@pytest.fixture(scope="module")
def deployments() -> dict:
    return {d.name: d for d in build_deployments(cron="0 3 * * *", inputs=["/videos/*.mp4"], output="/out")}


def test_every_flow_is_served_with_a_typed_form(deployments):
    assert list(deployments) == FLOWS
    pre = _schema(deployments["preprocess"])
    assert {"inputs", "output", "config"} <= set(pre["properties"])
    job = pre["definitions"]["PreprocessJob"]["properties"]  # the config form is typed, not a free dict
    assert {"decode", "detect", "mask", "pose", "filter", "runtime"} <= set(job)
    assert pre["definitions"]["DecodeConfig"]["properties"]["short_side"]["type"] == "integer"
    cache = _schema(deployments["cache_latents"])
    assert {"input", "output", "weights", "preset", "config"} <= set(cache["properties"])
    assert cache["definitions"]["CacheConfig"]["properties"]["mask_variants"]["type"] == "integer"
    train = _schema(deployments["train"])["definitions"]
    assert train["OptimConfig"]["properties"]["lr"]["type"] == "number"
    assert set(train["TrainConfig"]["properties"]["stage"]["enum"]) == {"stage1_image", "stage1_video", "stage2"}
    assert {"stage1_image", "stage1_video", "self_boost", "stage2"} <= set(
        _schema(deployments["two_stage"])["definitions"]["TwoStageJob"]["properties"])
    assert {"data", "model", "config"} <= set(_schema(deployments["self_boost"])["properties"])
    assert {"model", "data", "output", "config"} <= set(_schema(deployments["evaluate"])["properties"])
    assert {"jobs", "output", "weights", "preset", "config"} <= set(_schema(deployments["batch_infer"])["properties"])
    retrain = _schema(deployments["retrain"])
    assert {"videos", "root", "init", "config"} <= set(retrain["properties"])
    assert {"preprocess", "cache", "two_stage", "evaluate", "promotion"} <= set(
        retrain["definitions"]["RetrainJob"]["properties"])
    pipeline = _schema(deployments["pipeline"])
    assert {"videos", "references", "output", "preset", "config"} <= set(pipeline["properties"])
    assert {"preprocess", "cache", "two_stage", "evaluate", "batch", "jobs"} <= set(
        pipeline["definitions"]["PipelineJob"]["properties"])


def test_schedules_parameters_and_concurrency(deployments):
    pre = deployments["preprocess"]
    assert pre.parameters == {"inputs": ["/videos/*.mp4"], "output": "/out"}
    assert [s.schedule.cron for s in pre.schedules] == ["0 3 * * *"]
    assert [s.schedule.cron for s in deployments["retrain"].schedules] == [DEFAULT_RETRAIN_CRON]
    assert set(deployments["retrain"].parameters) == {"videos", "root"}
    assert not any(deployments[n].schedules for n in FLOWS if n not in ("preprocess", "retrain"))
    for name, deployment in deployments.items():
        assert deployment.concurrency_limit == (1 if name in TRAINING_FLOWS else None), name
    unscheduled = {d.name: d for d in build_deployments(retrain_cron=None)}
    assert not unscheduled["retrain"].schedules and not unscheduled["preprocess"].schedules


def test_prefect_yaml_declares_the_served_deployments():
    """prefect.yaml (for `prefect deploy` and a worker pool) names the same flows as `anycharv serve`,
    with entrypoints that import to those flows, the same retrain schedule and the same limits."""
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    declared = {d["name"]: d for d in spec["deployments"]}
    assert list(declared) == FLOWS
    served = {d.name: d for d in build_deployments()}
    for name, entry in declared.items():
        flow = load_flow_from_entrypoint(entry["entrypoint"], use_placeholder_flow=False)
        assert flow.name == served[name].flow_name == name
        assert entry.get("concurrency_limit") == served[name].concurrency_limit, name
        assert entry["work_pool"]["name"] == "anycharv"
    assert [s["cron"] for s in declared["retrain"]["schedules"]] == [DEFAULT_RETRAIN_CRON]
    assert declared["retrain"]["parameters"] == served["retrain"].parameters
