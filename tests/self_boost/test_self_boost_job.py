"""The self-boost job on a real small latent cache with the tiny stage-1 networks: who is paired
with whom, what a sample holds and how stage 2 reads it, reruns and other settings, clips without
a reference, model folders, and the Ray backend."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from anycharv.config import load_config
from anycharv.datasets import schema
from anycharv.datasets.sample_reader import SampleReader
from anycharv.datasets.stage2 import Stage2Dataset
from anycharv.errors import InputError
from anycharv.self_boost.config import BoostJob
from anycharv.self_boost.model_source import model_identity, resolve_model
from anycharv.self_boost.runner import run_self_boost
from anycharv.self_boost.stages import RAW_LATENTS

TINY = resolve_model(None, "tiny")


def _job(*extra: str) -> BoostJob:
    return load_config(BoostJob, None, ["runtime.executor=local", "runtime.progress=false", "boost.steps=2",
                                        *extra])


def _cache_rows(cache) -> dict[str, dict]:
    return {r["clip_id"]: r for r in pq.read_table(cache / "shards" / "index.parquet").to_pylist()}


def _cache_val_clip(cache) -> str:
    return min(c for c, r in _cache_rows(cache).items() if r["split"] == "val")


def _samples(out) -> dict[str, tuple[dict, np.ndarray]]:
    """clip id -> (meta, generated latents) of every sample of the output's index."""
    reader = SampleReader(out)
    found = {}
    for sample in reader.samples:
        view = reader.view(sample)
        assert sample.set == "selfboost" and str(sample.shard.relative_to(out)).startswith("selfboost/")
        found[sample.clip_id] = (view.meta(), view.get(schema.GENERATED_LATENTS))
    reader.close()
    return found


def test_pairs_take_another_video_s_character_and_repeat_on_a_rerun(cache_dir, tmp_path):
    summary = run_self_boost(_job(), str(cache_dir), TINY, str(tmp_path / "a"))
    assert summary.generated == summary.samples == 6 and summary.rejected == {}
    rows = _cache_rows(cache_dir)
    first = _samples(tmp_path / "a")
    assert set(first) == set(rows)
    for clip_id, (meta, _) in first.items():
        ref = rows[meta["reference_clip_id"]]
        assert ref["source_digest"] != rows[clip_id]["source_digest"]
        assert meta["reference_source"] == ref["source"] != rows[clip_id]["source"]
        assert meta["model"] == {"preset": "tiny", "seed": 0} and meta["steps"] == 2 and meta["seed"] == 0
        assert 0 <= meta["reference_frame"] < 2
    # The single validation video's clips take a training video's character (same_split_first).
    assert {rows[m["reference_clip_id"]]["split"] for m, _ in first.values() if m["split"] == "val"} == {"train"}
    assert summary.cross_bucket == sum(m["reference_bucket"] != m["bucket"] for m, _ in first.values()) > 0

    run_self_boost(_job(), str(cache_dir), TINY, str(tmp_path / "b"))
    second = _samples(tmp_path / "b")
    for clip_id, (meta, latents) in first.items():
        assert second[clip_id][0] == meta
        np.testing.assert_array_equal(second[clip_id][1], latents)
    run_self_boost(_job("boost.seed=1"), str(cache_dir), TINY, str(tmp_path / "c"))
    seeded = _samples(tmp_path / "c")
    assert any(seeded[c][0]["reference_clip_id"] != m["reference_clip_id"] or
               not np.array_equal(seeded[c][1], x) for c, (m, x) in first.items())


def test_stage2_reads_the_default_output_with_the_originals_shapes(cache_dir):
    from anycharv.model.encoders import decode_latents, encode_frames
    from anycharv.model.image_processing import video_to_uint8
    from anycharv.model.tiny import build_tiny_components

    summary = run_self_boost(_job("boost.keep_raw_latents=true"), str(cache_dir), TINY)
    out = cache_dir / "shards" / "boost"
    assert summary.output == str(out) and (out / "index.parquet").is_file()
    seen = set()
    for split, bucket in (("train", "64x32"), ("train", "32x64"), ("val", None)):
        data = Stage2Dataset(cache_dir, out, split, num_frames=8, bucket=bucket, sample_posterior=False)
        for item in data:
            seen.add(item["clip_id"])
            assert item["input_latents"].shape == item["latents"].shape
            assert item["reference_clip_id"] and item["reference_clip_id"] != item["clip_id"]
            assert torch.isfinite(item["input_latents"]).all()
            assert not torch.equal(item["input_latents"], item["latents"])
    assert len(seen) == 6

    # What is stored is the generated video decoded to uint8 frames and encoded again, in the cache's dtype.
    vae = build_tiny_components(seed=0, with_image_encoder=False)["vae"]
    reader = SampleReader(out)
    view = reader.view(reader.samples[0])
    generated, raw = view.get(schema.GENERATED_LATENTS), view.get(RAW_LATENTS)
    assert generated.dtype == raw.dtype == np.float16 and view.meta()["raw_latents"] == RAW_LATENTS
    frames = video_to_uint8(decode_latents(vae, torch.from_numpy(raw.astype(np.float32)).permute(1, 0, 2, 3)[None])
                            [0].permute(1, 2, 3, 0), mode="round").numpy()
    again = encode_frames(vae, frames)[0].permute(1, 0, 2, 3).numpy()
    np.testing.assert_allclose(generated.astype(np.float32), again, atol=2e-2)
    assert np.abs(generated.astype(np.float32) - raw.astype(np.float32)).max() > 0.05
    reader.close()

    # The cache job never sweeps the self-boost folder, and its own index is untouched.
    from anycharv.atomic import TMP_PREFIX
    from anycharv.latent_cache.layout import CacheLayout

    stray = out / "selfboost" / f"{TMP_PREFIX}in-progress.tar"
    stray.write_bytes(b"x")
    CacheLayout.at(cache_dir).sweep_temporary()
    assert stray.exists() and len(SampleReader(cache_dir / "shards").samples) == 6


def test_rerun_generates_nothing_and_other_settings_or_models_are_refused(cache_dir, tmp_path, tiny_model_dir):
    out = tmp_path / "boost"
    run_self_boost(_job(), str(cache_dir), TINY, str(out))
    index = pq.read_table(out / "index.parquet")
    again = run_self_boost(_job("boost.num_previews=0", "boost.splits=[train]"), str(cache_dir), TINY, str(out))
    assert again.generated == 0 and again.shards_written == 0 and again.reused == 4
    assert pq.read_table(out / "index.parquet").equals(index)  # the val shards stay indexed

    with pytest.raises(InputError, match=r"settings \(boost\.\*\)") as err:
        run_self_boost(_job("boost.steps=3"), str(cache_dir), TINY, str(out))
    assert err.value.code == "cache_mismatch" and str(out) in str(err.value)
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    weights = next((other / "pose_guider").glob("*.safetensors"))
    from safetensors.torch import load_file, save_file

    state = load_file(weights)
    save_file({k: v + 0.01 for k, v in state.items()}, weights)
    with pytest.raises(InputError, match="model") as err:
        run_self_boost(_job(), str(cache_dir), resolve_model(str(other)), str(out))
    assert err.value.code == "cache_mismatch"
    rebuilt = run_self_boost(_job("runtime.resume=false", "boost.steps=3"), str(cache_dir), TINY, str(out))
    assert rebuilt.generated == 6 and rebuilt.samples == 6


def test_a_clip_without_another_source_in_reach_is_rejected_and_the_rest_finish(cache_dir, tmp_path):
    summary = run_self_boost(_job("boost.reference_pool=same_split"), str(cache_dir), TINY, str(tmp_path / "b"))
    rows = _cache_rows(cache_dir)
    val = {c for c, r in rows.items() if r["split"] == "val"}
    assert summary.rejected == {"no_other_source": 2} and summary.generated == summary.samples == 4
    assert {r["clip_id"] for r in summary.rejected_clips} == val
    assert "no clip of another source video" in summary.rejected_clips[0]["detail"]
    assert set(_samples(tmp_path / "b")) == set(rows) - val
    assert summary.splits == {"train": 4} and summary.shards_unfinished == 0


def test_a_checkpoint_and_its_exported_copy_are_the_same_model(cache_dir, tmp_path, tiny_model_dir):
    # A checkpoint folder stands for its model/ (run folders resolve to their latest checkpoint's:
    # training's resolve_model_dir, tested with training).
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint_00000010"
    shutil.copytree(tiny_model_dir, checkpoint / "model")
    from_run, exported = resolve_model(str(checkpoint)), resolve_model(str(tiny_model_dir))
    assert from_run.folder == str(checkpoint / "model")
    assert model_identity(from_run) == model_identity(exported) != model_identity(TINY)
    # An explicit VAE folder (here the tiny preset's, the cache's own) replaces the cache's and is recorded.
    from anycharv.model.tiny import build_tiny_components

    build_tiny_components(seed=0, with_image_encoder=False)["vae"].save_pretrained(tmp_path / "vae")
    summary = run_self_boost(_job("boost.splits=[val]", "boost.num_previews=1"), str(cache_dir), from_run,
                             str(tmp_path / "b"), vae=str(tmp_path / "vae"))
    assert summary.generated == 2 and summary.splits == {"val": 2} and len(summary.previews) == 1
    meta, latents = _samples(tmp_path / "b")[_cache_val_clip(cache_dir)]
    assert meta["model"] == model_identity(exported) and set(meta["vae"]) == {"vae"}
    run_self_boost(_job("boost.splits=[val]"), str(cache_dir), from_run, str(tmp_path / "c"))
    np.testing.assert_array_equal(_samples(tmp_path / "c")[meta["clip_id"]][1], latents)


def test_the_ray_backend_gives_the_local_backend_s_samples(cache_dir, tmp_path, ray_local):
    local = run_self_boost(_job("boost.splits=[val]"), str(cache_dir), TINY, str(tmp_path / "local"))
    on_ray = run_self_boost(_job("boost.splits=[val]", "runtime.executor=ray-actors"), str(cache_dir), TINY,
                            str(tmp_path / "ray"))
    assert on_ray.ray_started and on_ray.generated == local.generated == 2
    a, b = _samples(tmp_path / "local"), _samples(tmp_path / "ray")
    assert a.keys() == b.keys()
    for clip_id in a:
        assert a[clip_id][0] == b[clip_id][0]
        np.testing.assert_allclose(a[clip_id][1].astype(np.float32), b[clip_id][1].astype(np.float32), atol=1e-2)
