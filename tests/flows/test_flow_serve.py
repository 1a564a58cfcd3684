"""The served deployments expose the typed configs as form schemas; preprocessing carries the schedule."""

from __future__ import annotations

from anycharv.flows.serve import build_deployments


def test_deployments_have_typed_forms_and_the_schedule(tmp_path):
    deployment, cache, train, boost, two_stage = build_deployments(
        cron="0 3 * * *", inputs=[str(tmp_path / "*.mp4")], output=str(tmp_path / "out"))
    assert deployment.name == "preprocess"
    schema = deployment._parameter_openapi_schema.model_dump() if hasattr(
        deployment._parameter_openapi_schema, "model_dump") else dict(deployment._parameter_openapi_schema)
    props = schema["properties"]
    assert set(props) >= {"inputs", "output", "config"}
    # The config form is typed: its sections are real nested models, not a free-form dict.
    definitions = schema.get("definitions", {})
    job = definitions["PreprocessJob"]["properties"]
    assert {"decode", "detect", "mask", "pose", "filter", "runtime"} <= set(job)
    assert definitions["DecodeConfig"]["properties"]["short_side"]["type"] == "integer"
    assert deployment.parameters["inputs"] == [str(tmp_path / "*.mp4")]
    assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
    assert cache.name == "cache_latents" and not cache.schedules
    cache_schema = cache._parameter_openapi_schema.model_dump() if hasattr(
        cache._parameter_openapi_schema, "model_dump") else dict(cache._parameter_openapi_schema)
    assert {"input", "output", "weights", "preset", "config"} <= set(cache_schema["properties"])
    cache_defs = cache_schema.get("definitions", {})
    assert {"cache", "runtime"} <= set(cache_defs["CacheJob"]["properties"])
    assert cache_defs["CacheConfig"]["properties"]["mask_variants"]["type"] == "integer"


def _schema(deployment) -> dict:
    schema = deployment._parameter_openapi_schema
    return schema.model_dump() if hasattr(schema, "model_dump") else dict(schema)


def test_training_deployments_have_typed_forms_and_run_one_at_a_time():
    _, _, train, boost, two_stage = build_deployments()
    assert [d.name for d in (train, boost, two_stage)] == ["train", "self_boost", "two_stage"]
    train_defs = _schema(train)["definitions"]
    assert {"train", "runtime"} <= set(train_defs["TrainJob"]["properties"])
    assert train_defs["OptimConfig"]["properties"]["lr"]["type"] == "number"
    assert set(train_defs["TrainConfig"]["properties"]["stage"]["enum"]) == {"stage1_image", "stage1_video", "stage2"}
    assert {"stage1_image", "stage1_video", "self_boost", "stage2"} <= set(
        _schema(two_stage)["definitions"]["TwoStageJob"]["properties"])
    assert {"data", "model", "config"} <= set(_schema(boost)["properties"])
    assert train.concurrency_limit == 1 and two_stage.concurrency_limit == 1
