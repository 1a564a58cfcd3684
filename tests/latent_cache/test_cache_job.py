"""The latent-cache job on a small preprocessing output: what a sample holds and how it decodes,
the shards and index, the split, reruns, a kill and resume, bad clips and mixed settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest
import torch

from anycharv.config import load_config
from anycharv.datasets import schema
from anycharv.datasets.codec import decode
from anycharv.errors import InputError
from anycharv.latent_cache.config import CacheJob, EncoderSource
from anycharv.latent_cache.runner import run_cache
from anycharv.model.encoders import decode_latents, encode_frames
from anycharv.preprocessing.annotations import load_masks
from anycharv.preprocessing.video_io import read_frames

BUCKETS = "cache.buckets=[[80,48],[48,80]]"


def _job(*extra: str) -> CacheJob:
    return load_config(CacheJob, None, [BUCKETS, "runtime.executor=local", "runtime.progress=false",
                                        "cache.samples_per_shard=2", "cache.val_fraction=0.3", *extra])


def _samples(out) -> dict[str, dict]:
    """clip id -> {field: value} for every sample of every shard, read with plain tarfile."""
    found = {}
    for path in sorted((out / "shards").rglob("*.tar")):
        with tarfile.open(path) as tar:
            for info in tar:
                key, _, field = info.name.partition(".")
                found.setdefault(key, {})[field] = decode(field, tar.extractfile(info).read())
    return found


def _resized(frames: np.ndarray, shape) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(f, (shape[2], shape[1]), interpolation=cv2.INTER_AREA) for f in frames])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.fixture
def cached(prep_dir, encoder_dirs, tmp_path):
    source = EncoderSource(**encoder_dirs)
    out = tmp_path / "cache"
    summary = run_cache(_job(), str(prep_dir), str(out), source)
    return {"out": out, "summary": summary, "source": source, "prep": prep_dir}


def test_cached_latents_decode_to_their_own_frames(cached, encoder_dirs):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(encoder_dirs["vae"]).eval()
    samples = _samples(cached["out"])
    assert len(samples) == 6 and cached["summary"].samples == 6
    decoded, sources = {}, {}
    for key, s in samples.items():
        meta = s[schema.META]
        assert set(meta) == set(schema.META_KEYS) and meta["schema_version"] == schema.SCHEMA_VERSION
        lat = s[schema.LATENTS]
        assert lat.dtype == np.float16 and lat.shape == (8, 4, meta["height"] // 8, meta["width"] // 8)
        decoded[key] = _decode(vae, lat)
        x0, y0, x1, y1 = meta["crop"]
        first = meta["frame_indices"][0]
        frames = read_frames(meta["source"], first, first + 8, (meta["prep_width"], meta["prep_height"]))
        sources[key] = frames[:, y0:y1, x0:x1]
        assert sources[key].shape[1:3] == decoded[key].shape[1:3]  # the buckets equal the processing sizes here
    for key in samples:
        # Close to the clip's frames (as close as this small VAE gets) ...
        assert _psnr(decoded[key], sources[key]) > 13.0
        # ... and exactly the VAE's encoding of them (fp16 storage aside), not of another clip's.
        own = _psnr(decoded[key], _reconstruct(vae, sources[key]))
        assert own > 35.0, f"{key}: {own:.1f} dB from the VAE's own reconstruction of its frames"
        source = samples[key][schema.META]["source"]
        for other in samples:
            if samples[other][schema.META]["source"] != source:
                assert _psnr(decoded[key], _reconstruct(vae, _resized(sources[other], sources[key].shape))) < 30.0


def _decode(vae, latents: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        video = decode_latents(vae, torch.from_numpy(latents.astype(np.float32)).permute(1, 0, 2, 3)[None])
    return (video[0].permute(1, 2, 3, 0).numpy() * 255).round()


def _reconstruct(vae, frames: np.ndarray) -> np.ndarray:
    return _decode(vae, encode_frames(vae, frames)[0].permute(1, 0, 2, 3).numpy())


def test_masked_inputs_black_out_their_masks_and_augmentations_only_grow(cached, encoder_dirs):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(encoder_dirs["vae"]).eval()
    for key, s in _samples(cached["out"]).items():
        kinds = [v["kind"] for v in s[schema.META]["mask_variants"]]
        assert kinds == ["original", "jitter", "curved_box"]
        m0 = s[schema.mask(0)]
        assert m0.dtype == np.uint8 and set(np.unique(m0)) <= {0, 1} and m0.any()
        assert np.all(s[schema.mask(1)] >= m0)  # the contour jitter never shrinks the mask
        # The stage-1 input is the VAE's encoding of the frames with the fine mask set to black.
        meta = s[schema.META]
        row = next(r for r in pq.read_table(cached["prep"] / "manifest" / "clips.parquet").to_pylist()
                   if r["clip_id"] == key)
        fine = load_masks(cached["prep"] / row["ann_masks"])  # at processing size = the bucket size here
        first = meta["frame_indices"][0]
        frames = read_frames(meta["source"], first, first + 8, (meta["prep_width"], meta["prep_height"]))
        expected = encode_frames(vae, np.where(fine[..., None], 0, frames).astype(np.uint8))[0].permute(1, 0, 2, 3)
        got = torch.from_numpy(s[schema.masked_latents(0)].astype(np.float32))
        assert torch.allclose(got, expected, atol=1e-2, rtol=1e-2)
        assert not torch.allclose(got, torch.from_numpy(s[schema.LATENTS].astype(np.float32)), atol=0.1)
        box = s[schema.BOX_MASK]
        assert np.all(box >= m0)  # the padded box covers the fine mask
        assert s[schema.REF_LATENTS].shape[0] == len(s[schema.META]["reference_frames"]) == 4
        assert s[schema.REF_CLIP].shape == (4, 1, 32) and s[schema.REF_CLIP].dtype == np.float32


def test_index_points_into_the_tars_and_splits_by_video(cached):
    out = cached["out"]
    rows = pq.read_table(out / "shards" / "index.parquet").to_pylist()
    assert len(rows) == 6
    for row in rows:
        path = out / "shards" / row["shard"]
        assert row["shard"].startswith(f"stage1/{row['bucket']}/{row['split']}-")
        with tarfile.open(path) as tar:
            infos = {i.name: i for i in tar}
        for field, (offset, size) in json.loads(row["members"]).items():
            info = infos[f"{row['clip_id']}.{field}"]
            assert (info.offset_data, info.size) == (offset, size)
    by_source = {}
    for row in rows:
        by_source.setdefault(row["source_digest"], set()).add(row["split"])
    assert all(len(s) == 1 for s in by_source.values()), "a video's clips were split between train and val"
    assert {"train", "val"} == set().union(*by_source.values())


def test_rerun_keeps_everything_and_starts_nothing(cached):
    out = cached["out"]
    before = (out / "shards" / "index.parquet").read_bytes()
    tars = {p: p.stat().st_mtime_ns for p in (out / "shards").rglob("*.tar")}
    again = run_cache(_job(), str(cached["prep"]), str(out), cached["source"])
    assert (again.encoded, again.shards_written, again.ray_started) == (0, 0, False)
    assert (out / "shards" / "index.parquet").read_bytes() == before
    assert {p: p.stat().st_mtime_ns for p in (out / "shards").rglob("*.tar")} == tars


def test_a_grown_input_adds_its_new_clips_to_the_shards(prep_dir, encoder_dirs, tmp_path):
    """New clips sort into shards that are complete already: those shards are written again with
    them (a rerun must not keep the old membership), and the index is a fresh run's."""
    manifest = prep_dir / "manifest" / "clips.parquet"
    full = pq.read_table(manifest)
    ok = [r["clip_id"] for r in full.to_pylist() if r["status"] == "ok"]
    source = EncoderSource(**encoder_dirs)
    out = tmp_path / "cache"
    pq.write_table(full.filter(pa.compute.is_in(full["clip_id"], pa.array(ok[::2]))), manifest)  # every other clip
    first = run_cache(_job(), str(prep_dir), str(out), source)
    assert first.samples == len(ok[::2]) == 3
    pq.write_table(full, manifest)  # the input grew: the other clips arrive
    again = run_cache(_job(), str(prep_dir), str(out), source)
    clean = run_cache(_job(), str(prep_dir), str(tmp_path / "clean"), source)
    assert again.samples == clean.samples == 6 and again.shards_written >= 1
    columns = ["clip_id", "shard", "split", "bucket"]
    assert (pq.read_table(out / "shards" / "index.parquet", columns=columns).to_pylist()
            == pq.read_table(tmp_path / "clean" / "shards" / "index.parquet", columns=columns).to_pylist())


def test_other_settings_do_not_mix_into_the_folder(cached):
    with pytest.raises(InputError, match="other settings") as err:
        run_cache(_job("cache.mask_variants=1"), str(cached["prep"]), str(cached["out"]), cached["source"])
    assert err.value.code == "cache_mismatch"


def test_a_bad_clip_is_rejected_and_the_rest_is_cached(prep_dir, encoder_dirs, tmp_path):
    rows = pq.read_table(prep_dir / "manifest" / "clips.parquet").to_pylist()
    bad = next(r for r in rows if r["status"] == "ok")
    (prep_dir / bad["ann_masks"]).write_bytes(b"not an npz")
    summary = run_cache(_job(), str(prep_dir), str(tmp_path / "cache"), EncoderSource(**encoder_dirs))
    assert summary.rejected == {"bad_annotations": 1}
    assert summary.rejected_clips[0]["clip_id"] == bad["clip_id"] and "masks" in summary.rejected_clips[0]["detail"]
    index = pq.read_table(tmp_path / "cache" / "shards" / "index.parquet").to_pylist()
    assert len(index) == 5 and bad["clip_id"] not in {r["clip_id"] for r in index}


KILLED_RUN = """
import sys
from anycharv.config import load_config
from anycharv.latent_cache.config import CacheJob, EncoderSource
from anycharv.latent_cache.runner import run_cache
job = load_config(CacheJob, None, sys.argv[4:])
run_cache(job, sys.argv[1], sys.argv[2], EncoderSource(preset=sys.argv[3]))
"""


def test_killed_run_resumed_gives_the_same_index(prep_dir, tmp_path):
    args = [BUCKETS, "runtime.executor=local", "runtime.progress=false", "cache.samples_per_shard=1",
            "cache.val_fraction=0.3", "runtime.batch_size=1"]
    clean = tmp_path / "clean"
    run_cache(load_config(CacheJob, None, args), str(prep_dir), str(clean), EncoderSource(preset="tiny"))

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(prep_dir), str(out), "tiny", *args])
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / ".state" / "shards").glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / ".state" / "shards").glob("*.json")))
    assert 2 <= done_before < 6

    resumed = run_cache(load_config(CacheJob, None, args), str(prep_dir), str(out), EncoderSource(preset="tiny"))
    assert resumed.shards_written == 6 - done_before
    table = pq.read_table(out / "shards" / "index.parquet")
    assert table.equals(pq.read_table(clean / "shards" / "index.parquet"))
    assert not list(out.rglob(".tmp-*")), "an interrupted write was left behind"


def test_ray_backend_gives_the_local_backend_s_index(prep_dir, tmp_path, ray_local):
    source = EncoderSource(preset="tiny")
    run_cache(_job(), str(prep_dir), str(tmp_path / "local"), source)
    summary = run_cache(_job("runtime.executor=ray-actors"), str(prep_dir), str(tmp_path / "ray"), source)
    assert summary.ray_started and summary.encoded == 6 and summary.frames_per_s > 0
    local = pq.read_table(tmp_path / "local" / "shards" / "index.parquet")
    assert pq.read_table(tmp_path / "ray" / "shards" / "index.parquet").equals(local)
