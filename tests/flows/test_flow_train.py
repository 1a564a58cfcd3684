"""The Prefect flows ``train`` and ``two_stage`` (real Prefect harness) on a real small latent cache."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

PREP_MODULE = "anycharv_test_prep_output"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """The cache job on the latent-cache tests' preprocessing output (tiny encoders, one 64x64 bucket)."""
    from anycharv.config import load_config
    from anycharv.latent_cache.config import CacheJob, EncoderSource
    from anycharv.latent_cache.runner import run_cache

    if PREP_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PREP_MODULE, Path(__file__).resolve().parents[1] / "latent_cache" / "prep_output.py")
        sys.modules[PREP_MODULE] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[PREP_MODULE])
    root = tmp_path_factory.mktemp("flow-train")
    prep = sys.modules[PREP_MODULE].make_prep_output(root / "prep")
    job = load_config(CacheJob, None, ["cache.buckets=[[64,64]]", "cache.val_fraction=0.3", "runtime.executor=local",
                                       "runtime.progress=false", "cache.num_references=2"])
    run_cache(job, str(prep), str(root / "cache"), EncoderSource(preset="tiny"))
    return root / "cache"


QUICK = ["runtime.launcher=local", "runtime.validation.steps=2", "runtime.validation.num_clips=1",
         "runtime.validation.num_frames=4", "train.data.batch_size=1", "train.data.num_frames=4",
         "runtime.checkpoint.every=2"]


def test_train_flow_publishes_the_loss_curve_validation_and_checkpoint(prefect_harness, cache, tmp_path):
    from prefect.artifacts import Artifact

    from anycharv.config import load_config
    from anycharv.flows.train import train
    from anycharv.training.config import TrainJob

    job = load_config(TrainJob, None, [*QUICK, "train.init.preset=tiny", "runtime.max_steps=4",
                                       "runtime.validation.every=2"])
    result = train(data=str(cache), output=str(tmp_path / "run"), config=job)
    assert result["final_step"] == 4 and result["checkpoint"].endswith("checkpoint_00000004")
    assert [v["step"] for v in result["validations"]] == [0, 2, 4]
    summary = Artifact.get("train-stage1-image-summary").data
    assert "# Training stage1_image" in summary and summary.count("data:image/png;base64,") == 2  # curve, preview
    rows = json.loads(Artifact.get("train-stage1-image-validation").data)
    assert [r["step"] for r in rows] == [0, 2, 4] and all(r["psnr"] > 0 for r in rows)
    assert Artifact.get("train-stage1-image-checkpoint").data.endswith("/run/checkpoints/checkpoint_00000004)")
    assert (tmp_path / "run" / "loss.png").is_file()


def test_two_stage_runs_every_step_then_skips_what_is_complete(prefect_harness, cache, tmp_path):
    import shutil

    from anycharv.config import load_config
    from anycharv.datasets.sample_reader import SampleReader
    from anycharv.flows.two_stage import TwoStageJob, two_stage

    data = Path(shutil.copytree(cache, tmp_path / "cache"))
    steps = [f"{s}.{k}" for s in ("stage1_image", "stage1_video", "stage2") for k in [*QUICK, "runtime.max_steps=2"]]
    job = load_config(TwoStageJob, None, [*steps, "self_boost.runtime.executor=local", "self_boost.boost.steps=2",
                                          "self_boost.boost.context_frames=8", "self_boost.boost.context_overlap=2",
                                          "self_boost.runtime.progress=false"])
    first = two_stage(data=str(data), output=str(tmp_path / "runs"), preset="tiny", config=job)
    for name in ("stage1_image", "stage1_video", "stage2"):
        assert first[name]["final_step"] == 2 and not first[name]["skipped"], name
    assert json.loads((tmp_path / "runs" / "stage1_video" / "run.json").read_text())["stage"] == "stage1_video"
    boost = SampleReader(data / "shards" / "boost").samples
    assert len(boost) == 6 and {s.set for s in boost} == {"selfboost"}
    second = two_stage(data=str(data), output=str(tmp_path / "runs"), preset="tiny", config=job)
    assert all(second[name]["skipped"] for name in ("stage1_image", "stage1_video", "stage2"))
    assert second["self_boost"]["generated"] == 0


def test_a_step_given_in_part_keeps_its_own_stage_defaults(tmp_path):
    """``stage2.runtime.max_steps=30`` (or a YAML section with one key) changes that key only: the
    rest of stage 2 stays configs/train/stage2.yaml's, not the plain TrainJob defaults."""
    from anycharv.config import load_config
    from anycharv.flows.two_stage import TwoStageJob, stage_defaults
    from anycharv.training.config import TrainJob

    partial = load_config(TwoStageJob, None, ["stage2.runtime.max_steps=30", "self_boost.boost.steps=3"])
    expected = stage_defaults("stage2")
    assert partial.stage2.runtime.max_steps == 30 and expected.runtime.max_steps != 30
    assert partial.stage2.train == expected.train
    plain = TrainJob()
    assert (plain.train.optim.warmup_steps, plain.train.modules.gradient_checkpointing) != (
        expected.train.optim.warmup_steps, expected.train.modules.gradient_checkpointing)  # the test can fail
    assert partial.self_boost.boost.steps == 3 and partial.stage1_image == TwoStageJob().stage1_image
    yaml_file = tmp_path / "steps.yaml"
    yaml_file.write_text("stage2:\n  train:\n    optim:\n      warmup_steps: 7\n")
    from_file = load_config(TwoStageJob, yaml_file)
    assert from_file.stage2.train.optim.warmup_steps == 7
    assert from_file.stage2.train.data == expected.train.data and from_file.stage2.runtime == expected.runtime
