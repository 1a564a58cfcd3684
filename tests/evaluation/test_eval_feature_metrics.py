"""The optional metrics end to end, with real networks of random weights in the file formats
the job reads (a CLIP vision folder, a DINOv2 folder, a torchvision inception_v3 state dict, a
TorchScript video network with StyleGAN-V's I3D call, LPIPS's two files): computed only when
their weights are given, with the numbers recomputable from what the job leaves."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from anycharv.config import load_config
from anycharv.errors import InputError
from anycharv.evaluation.config import METRICS, EvalJob
from anycharv.evaluation.feature_metrics import (
    I3DFeatures,
    ImageEmbedder,
    InceptionFeatures,
    frechet_distance,
    gaussian_stats,
)
from anycharv.evaluation.runner import run_evaluation
from anycharv.executor import SetupError


def _weights(w: dict[str, str]) -> list[str]:
    return [f"eval.clip_weights={w['clip']}", f"eval.dino_weights={w['dino']}", f"eval.fid_weights={w['fid']}",
            f"eval.fvd_weights={w['fvd']}", f"eval.lpips_weights={w['lpips']}",
            f"eval.lpips_backbone={w['lpips_backbone']}"]


def _job(*extra: str) -> EvalJob:
    return load_config(EvalJob, None, ["runtime.executor=local", "runtime.progress=false", "eval.steps=2",
                                       "eval.num_frames=4", "eval.fvd_frames=4", *extra])


def test_every_metric_is_computed_when_its_weights_are_given(eval_cache, eval_model, metric_weights, tmp_path):
    out = tmp_path / "out"
    summary = run_evaluation(_job(*_weights(metric_weights), "eval.metric=fid"), str(eval_model), str(eval_cache),
                             str(out))
    assert summary.metrics_available == list(METRICS) and summary.metrics_skipped == {}
    assert summary.metric == "fid" and not summary.higher_is_better and summary.score == summary.aggregate["fid"]
    clips = pq.read_table(out / "clips.parquet").to_pylist()
    assert len(clips) == 2
    for row in clips:
        assert row["lpips"] > 0 and -1 <= row["clip_i"] <= 1 and -1 <= row["dino_i"] <= 1
    aggregate = {r["metric"]: r for r in pq.read_table(out / "aggregate.parquet").to_pylist()}
    assert aggregate["fid"]["samples"] == 8 and aggregate["fid"]["clips"] == 2  # 2 clips x 4 frames per side
    assert aggregate["fvd"]["samples"] == 2 and aggregate["fvd"]["clips"] == 2
    assert aggregate["fid"]["value"] > 0 and aggregate["fvd"]["value"] > 0
    assert summary.samples["fid"] == 8 and summary.samples["fvd"] == 2
    assert any("FID on 8 frames" in w and "meaningless" in w for w in summary.warnings)
    assert any("FVD on 2 4-frame videos" in w for w in summary.warnings)

    # FID is the Fréchet distance of the features the clips left (unbiased covariances), FVD the
    # same with biased ones, as StyleGAN-V
    files = sorted((out / "features").glob("*.npz"))
    assert len(files) == 2
    arrays = [dict(np.load(f, allow_pickle=False)) for f in files]
    assert arrays[0]["fid_generated"].shape == (4, 2048) and arrays[0]["fvd_generated"].shape == (1, 24)
    for name, ddof in (("fid", 1), ("fvd", 0)):
        gen = np.concatenate([a[f"{name}_generated"] for a in arrays])
        tgt = np.concatenate([a[f"{name}_target"] for a in arrays])
        expected = frechet_distance(*gaussian_stats(gen, ddof), *gaussian_stats(tgt, ddof))
        assert aggregate[name]["value"] == pytest.approx(expected, rel=1e-6, abs=1e-6)  # stored to 6 decimals


def test_the_metric_networks_measure_what_they_should(metric_weights):
    device = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(3, 8, 64, 32, generator=gen)
    other = torch.rand(3, 8, 64, 32, generator=gen)
    inception = InceptionFeatures(metric_weights["fid"], device)
    features = inception(video)
    assert features.shape == (8, 2048) and np.isfinite(features).all()
    np.testing.assert_allclose(inception(video[:, :3]), features[:3], rtol=1e-4, atol=1e-5)  # per frame
    i3d = I3DFeatures(metric_weights["fvd"], device)
    assert i3d(video).shape == (1, 24) and not np.allclose(i3d(video), i3d(other))
    for kind in ("clip", "dino"):
        embed = ImageEmbedder(kind, metric_weights[kind], device)
        e = embed([video[:, 0], video[:, 0], other[:, 0]])
        assert embed.size == 32 and torch.allclose(e.norm(dim=-1), torch.ones(3))
        assert float(e[0] @ e[1]) == pytest.approx(1.0, abs=1e-5) and float(e[0] @ e[2]) < 1 - 1e-4


def test_wrong_weight_files_are_refused_naming_the_field(eval_cache, eval_model, metric_weights, tmp_path):
    with pytest.raises(InputError, match="eval.fvd_frames") as err:
        run_evaluation(_job(f"eval.fvd_weights={metric_weights['fvd']}", "eval.fvd_frames=16"), str(eval_model),
                       str(eval_cache), str(tmp_path / "a"))
    assert "eval.num_frames is 4" in str(err.value)
    with pytest.raises(InputError, match="not a transformers model folder") as err:
        run_evaluation(_job(f"eval.dino_weights={tmp_path}"), str(eval_model), str(eval_cache), str(tmp_path / "b"))
    with pytest.raises(SetupError, match="not a torchvision inception_v3 state dict"):
        run_evaluation(_job(f"eval.fid_weights={metric_weights['lpips']}"), str(eval_model), str(eval_cache),
                       str(tmp_path / "c"))
    with pytest.raises(SetupError, match="eval.fvd_weights .*not a TorchScript file"):
        run_evaluation(_job(f"eval.fvd_weights={metric_weights['fid']}"), str(eval_model), str(eval_cache),
                       str(tmp_path / "d"))
