"""The evaluation job on a real small latent cache with the tiny networks: what it writes, that the
numbers repeat and follow the clips, which clips it picks, what it refuses, bad clips, the Ray backend."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from anycharv.config import load_config
from anycharv.errors import InputError
from anycharv.evaluation.config import EvalJob
from anycharv.evaluation.runner import CLIP_METRICS, is_better, run_evaluation
from anycharv.evaluation.stages import EvalStage

PIXEL = ["psnr", "psnr_mask", "psnr_outside", "ssim", "ssim_mask", "ssim_outside", "l1", "l1_mask", "l1_outside"]


def _job(*extra: str) -> EvalJob:
    return load_config(EvalJob, None, ["runtime.executor=local", "runtime.progress=false", "eval.steps=2",
                                       *extra])


def _index(cache) -> list[dict]:
    return pq.read_table(cache / "shards" / "index.parquet").to_pylist()


def _clips(out) -> dict[str, dict]:
    return {r["clip_id"]: r for r in pq.read_table(out / "clips.parquet").to_pylist()}


def test_scores_the_val_clips_writes_every_file_and_repeats_exactly(eval_cache, eval_model, tmp_path):
    summary = run_evaluation(_job(), str(eval_model), str(eval_cache), str(tmp_path / "a"))
    out = tmp_path / "a"
    val = {r["clip_id"] for r in _index(eval_cache) if r["split"] == "val"}
    assert summary.split_used == "val" and summary.clips == summary.planned == 2 and summary.rejected == {}
    assert summary.metric == "psnr_mask" and summary.higher_is_better
    assert summary.metrics_available == PIXEL and summary.warnings == []
    assert summary.metrics_skipped["fid"] == "no weights given (eval.fid_weights)"
    assert summary.metrics_skipped["lpips"] == "no weights given (eval.lpips_weights, eval.lpips_backbone)"
    assert set(summary.metrics_skipped) == {"lpips", "clip_i", "dino_i", "fid", "fvd"}

    clips = _clips(out)
    assert set(clips) == val
    for row in clips.values():
        assert row["status"] == "ok" and row["split"] == "val" and row["frames"] == row["num_frames"] == 8
        assert all(row[m] is not None for m in PIXEL) and row["lpips"] is None and row["clip_i"] is None
        assert 0 < row["ssim"] <= 1 and 0 < row["l1"] < 1 and row["reference_frame"] in (0, 7)
        # the model is random: inside the box (where it paints the character) it does worse than outside,
        # where the condition shows the frame itself
        assert row["psnr_mask"] != row["psnr_outside"] and row["l1_mask"] != row["l1_outside"]
        # the whole frame lies between its two parts
        lo, hi = sorted([row["l1_mask"], row["l1_outside"]])
        assert lo <= row["l1"] <= hi
    assert set(pq.read_table(out / "clips.parquet").column_names) >= {"clip_id", "split", "bucket", "frames",
                                                                      "status", "reason", "detail", *CLIP_METRICS}
    aggregate = {r["metric"]: r for r in pq.read_table(out / "aggregate.parquet").to_pylist()}
    assert list(aggregate) == PIXEL
    for name in PIXEL:
        assert aggregate[name]["value"] == pytest.approx(np.mean([c[name] for c in clips.values()]), abs=1e-6)
        assert aggregate[name]["clips"] == 2 and aggregate[name]["higher_is_better"] == (name[:2] != "l1")
        assert summary.aggregate[name] == aggregate[name]["value"]
    assert summary.score == summary.aggregate["psnr_mask"]
    saved = json.loads((out / "summary.json").read_text())
    assert saved["score"] == summary.score and saved["split_used"] == "val"
    assert load_config(EvalJob, out / "config.yaml") == _job()

    # previews: target frames over generated ones, 4 frames of the clip's bucket size
    assert len(summary.previews) == 2
    for path in summary.previews:
        clip_id = path.rsplit("/", 1)[1].removesuffix(".png")
        height, width = (int(v) for v in clips[clip_id]["bucket"].split("x"))
        assert Image.open(path).size == (4 * width, 2 * height)

    again = run_evaluation(_job("eval.num_previews=0"), str(eval_model), str(eval_cache), str(out))
    assert again.aggregate == summary.aggregate and again.previews == []
    assert not list((out / "previews").iterdir())  # the earlier run's previews are gone
    for clip_id, row in _clips(out).items():
        assert {m: row[m] for m in PIXEL} == {m: clips[clip_id][m] for m in PIXEL}

    other = run_evaluation(_job("eval.seed=1"), str(eval_model), str(eval_cache), str(tmp_path / "b"))
    assert other.aggregate != summary.aggregate  # other references and noise


def test_the_condition_the_frames_and_the_clips_follow_the_config(eval_cache, eval_model, tmp_path):
    box = run_evaluation(_job("eval.num_frames=4", "eval.num_clips=1", "eval.split=train"), str(eval_model),
                         str(eval_cache), str(tmp_path / "box"))
    fine = run_evaluation(_job("eval.num_frames=4", "eval.num_clips=1", "eval.split=train", "eval.condition=fine",
                               "eval.metric=l1_mask"), str(eval_model), str(eval_cache), str(tmp_path / "fine"))
    (row,) = _clips(tmp_path / "box").values()
    (fine_row,) = _clips(tmp_path / "fine").values()
    assert row["clip_id"] == fine_row["clip_id"] and row["split"] == "train" and row["frames"] == 4
    assert box.planned == box.clips == 1 and fine.condition == "fine"
    assert row["psnr"] != fine_row["psnr"]  # another input and another mask
    assert fine.metric == "l1_mask" and not fine.higher_is_better and fine.score == fine_row["l1_mask"]


def test_a_cache_without_val_clips_is_scored_on_train_clips_with_a_warning(eval_cache, eval_model, tmp_path):
    cache = shutil.copytree(eval_cache, tmp_path / "cache")
    index = pq.read_table(cache / "shards" / "index.parquet")
    index = index.set_column(index.column_names.index("split"), "split",
                             pa.array(["train"] * index.num_rows, pa.string()))
    pq.write_table(index, cache / "shards" / "index.parquet")
    summary = run_evaluation(_job("eval.num_clips=2", "eval.num_frames=2"), str(eval_model), str(cache),
                             str(tmp_path / "out"))
    assert summary.split_used == "train" and summary.clips == 2
    assert "no val clip" in summary.warnings[0]


def test_a_bad_clip_is_a_rejected_row_and_the_others_are_scored(eval_cache, eval_model, tmp_path):
    cache = shutil.copytree(eval_cache, tmp_path / "cache")
    rows = [r for r in _index(cache) if r["split"] == "val"]
    bad = rows[0]
    offset, size = json.loads(bad["members"])["box_mask.npy"]
    with open(cache / "shards" / bad["shard"], "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\0" * size)
    summary = run_evaluation(_job(), str(eval_model), str(cache), str(tmp_path / "out"))
    assert summary.clips == 1 and sum(summary.rejected.values()) == 1
    clips = _clips(tmp_path / "out")
    assert clips[bad["clip_id"]]["status"] == "rejected" and "box_mask.npy" in clips[bad["clip_id"]]["detail"]
    assert clips[bad["clip_id"]]["psnr"] is None
    good = next(c for c in clips.values() if c["status"] == "ok")
    assert summary.aggregate["psnr"] == good["psnr"]


def test_bad_inputs_are_refused_naming_them(eval_cache, eval_model, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(InputError, match="no such folder") as err:
        run_evaluation(_job(), str(tmp_path / "missing"), str(eval_cache), out)
    assert err.value.input_name == f"model {tmp_path / 'missing'}"
    with pytest.raises(InputError, match="not a latent cache"):
        run_evaluation(_job(), str(eval_model), str(eval_model), out)
    with pytest.raises(InputError, match="unknown metric 'psnr_inside'") as err:
        run_evaluation(_job("eval.metric=psnr_inside"), str(eval_model), str(eval_cache), out)
    assert err.value.input_name == "eval.metric"
    with pytest.raises(InputError, match=r"fid is not computed by this config: no weights given \(eval.fid_weights"):
        run_evaluation(_job("eval.metric=fid"), str(eval_model), str(eval_cache), out)
    with pytest.raises(InputError, match="never downloaded") as err:
        run_evaluation(_job(f"eval.clip_weights={tmp_path / 'clip'}"), str(eval_model), str(eval_cache), out)
    assert err.value.input_name == f"eval.clip_weights {tmp_path / 'clip'}"

    wide = shutil.copytree(eval_model, tmp_path / "wide")
    config = wide / "denoising_unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "cross_attention_dim": 768}))
    with pytest.raises(InputError, match="32-d, the denoising_unet takes 768-d") as err:
        run_evaluation(_job(), str(wide), str(eval_cache), out)
    assert err.value.code == "architecture_mismatch" and str(wide) in err.value.input_name
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_and_a_run_folder_stand_for_their_model(eval_cache, eval_model, tmp_path):
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint_00000010"
    shutil.copytree(eval_model, checkpoint / "model")
    exported = run_evaluation(_job("eval.num_clips=1"), str(eval_model), str(eval_cache), str(tmp_path / "a"))
    from_checkpoint = run_evaluation(_job("eval.num_clips=1"), str(checkpoint), str(eval_cache), str(tmp_path / "b"))
    assert from_checkpoint.model == str(checkpoint / "model")
    assert from_checkpoint.aggregate == exported.aggregate


def test_the_stage_is_cpu_only_without_a_gpu():
    import torch

    from anycharv.evaluation.config import EvalConfig
    from anycharv.latent_cache.config import EncoderSource

    stage = EvalStage(EvalConfig(), "m", EncoderSource(preset="tiny"), "c", "p", "f", 32, device="cpu")
    assert stage.resources.gpus == 0 and stage.resources.cpus == 1
    if torch.cuda.is_available():
        assert EvalStage(EvalConfig(), "m", EncoderSource(preset="tiny"), "c", "p", "f", 32).resources.gpus == 1


def test_is_better_respects_the_direction_and_the_margin():
    assert is_better(20.5, 20.0, True) and not is_better(20.5, 20.0, True, min_delta=1.0)
    assert is_better(0.1, 0.2, False) and not is_better(0.2, 0.1, False)
    assert not is_better(None, 1.0, True) and is_better(1.0, None, False)


def test_the_ray_backend_gives_the_local_backend_s_numbers(eval_cache, eval_model, tmp_path, ray_local):
    local = run_evaluation(_job(), str(eval_model), str(eval_cache), str(tmp_path / "local"))
    on_ray = run_evaluation(_job("runtime.executor=ray-actors"), str(eval_model), str(eval_cache),
                            str(tmp_path / "ray"))
    assert on_ray.ray_started and on_ray.clips == local.clips == 2
    a, b = _clips(tmp_path / "local"), _clips(tmp_path / "ray")
    for clip_id in a:
        for name in PIXEL:
            assert b[clip_id][name] == pytest.approx(a[clip_id][name], abs=1e-4)


@pytest.mark.gpu
def test_on_a_gpu_the_numbers_follow_the_cpu_s(eval_cache, eval_model, tmp_path):
    cpu = run_evaluation(_job("runtime.device=cpu"), str(eval_model), str(eval_cache), str(tmp_path / "cpu"))
    gpu = run_evaluation(_job("runtime.device=cuda", "runtime.dtype=fp32"), str(eval_model), str(eval_cache),
                         str(tmp_path / "gpu"))
    assert gpu.clips == cpu.clips == 2
    for name in PIXEL:
        tolerance = 0.5 if name.startswith("psnr") else 0.02  # TF32 convolutions, another sampler order
        assert gpu.aggregate[name] == pytest.approx(cpu.aggregate[name], abs=tolerance)
    half = run_evaluation(_job("runtime.device=cuda"), str(eval_model), str(eval_cache), str(tmp_path / "half"))
    assert half.clips == 2 and all(half.aggregate[name] is not None for name in PIXEL)  # bf16/fp16 networks
