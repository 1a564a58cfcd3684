"""Bad training configs and inputs fail at once with errors that name the problem."""

from __future__ import annotations

import subprocess
import sys

import pytest

from anycharv.config import load_config
from anycharv.errors import ConfigError, InputError
from anycharv.training.config import TrainJob
from anycharv.training.launcher import run_training


def _job(*args: str) -> TrainJob:
    return load_config(TrainJob, None, ["train.init.preset=tiny", "runtime.launcher=local",
                                        "runtime.validation.enabled=false", "runtime.max_steps=1", *args])


def test_an_unknown_stage_is_refused_by_the_config_and_the_command(tmp_path):
    with pytest.raises(ConfigError, match="train.stage"):
        _job("train.stage=stage3")
    done = subprocess.run([sys.executable, "-m", "anycharv.cli", "train", "--stage", "stage3", "--data", str(tmp_path),
                           "--output", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "invalid choice: 'stage3'" in done.stderr


def test_missing_or_empty_shards_are_named(tmp_path, synthetic_cache):
    with pytest.raises(InputError, match="no shards/index.parquet here") as err:
        run_training(_job(), str(tmp_path / "nothing"), str(tmp_path / "run"))
    assert err.value.code == "no_index"
    for tar in (synthetic_cache / "shards" / "stage1").rglob("*.tar"):
        tar.unlink()
    with pytest.raises(InputError, match="shard file missing"):
        run_training(_job(), str(synthetic_cache), str(tmp_path / "run2"))


def test_stage2_without_boost_shards_says_how_to_make_them(synthetic_cache, tmp_path):
    import shutil

    shutil.rmtree(synthetic_cache / "shards" / "boost")
    with pytest.raises(InputError, match="anycharv self-boost") as err:
        run_training(_job("train.stage=stage2"), str(synthetic_cache), str(tmp_path / "run"))
    assert err.value.code == "no_boost_shards"


def test_a_start_of_another_architecture_is_refused(synthetic_cache, tmp_path):
    from anycharv.training.modules import tiny_networks

    nets = tiny_networks(0)
    wide = type(nets["reference_unet"])(**{**nets["reference_unet"].config, "cross_attention_dim": 16})
    for name, net in {**nets, "reference_unet": wide}.items():
        net.save_pretrained(str(tmp_path / "other" / name))
    with pytest.raises(InputError, match="another architecture|16-d context") as err:
        run_training(_job(f"train.init.model={tmp_path / 'other'}", "train.init.preset=null"), str(synthetic_cache),
                     str(tmp_path / "run"))
    assert err.value.code == "architecture_mismatch"


def test_a_checkpoint_of_another_architecture_or_run_is_refused(synthetic_cache, tmp_path):
    run_training(_job(), str(synthetic_cache), str(tmp_path / "run"))
    with pytest.raises(InputError, match="holds another training run") as err:
        run_training(_job("train.optim.lr=0.5"), str(synthetic_cache), str(tmp_path / "run"))
    assert err.value.code == "run_mismatch"

    from anycharv.training.checkpoint import load_networks_into
    from anycharv.training.modules import tiny_networks
    from anycharv.training.run_layout import RunLayout

    nets = tiny_networks(0)
    nets["denoising_unet"] = type(nets["denoising_unet"])(**{**nets["denoising_unet"].config,
                                                              "block_out_channels": (32, 64, 64)})
    with pytest.raises(InputError, match="another architecture") as err:
        load_networks_into(nets, RunLayout.at(tmp_path / "run").latest_checkpoint()[1])
    assert err.value.code == "architecture_mismatch"



def test_a_cache_without_train_samples_is_named(tmp_path, cache_writer):
    cache_writer.make_cache(tmp_path / "data", cache_writer.clips(3, dim=32, split="val"))
    with pytest.raises(InputError, match="no train samples for stage1_image") as err:
        run_training(_job(), str(tmp_path / "data"), str(tmp_path / "run"))
    assert err.value.code == "empty_dataset"
