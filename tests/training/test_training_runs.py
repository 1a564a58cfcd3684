"""Training runs: 2-worker DDP (and FSDP) equals 1 worker with the same global batch, a killed run resumes
with the same losses, frozen modules stay frozen, and an exported run infers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from anycharv.config import load_config
from anycharv.training.config import TrainJob
from anycharv.training.launcher import run_training
from anycharv.training.metrics import read_jsonl
from anycharv.training.run_layout import RunLayout

NETS = ("reference_unet", "denoising_unet", "pose_guider")


def _job(*args: str) -> TrainJob:
    base = ["train.init.preset=tiny", "runtime.launcher=local", "runtime.validation.enabled=false",
            "train.optim.lr=1e-3", "runtime.log_every=1000"]
    return load_config(TrainJob, None, [*base, *args])


def _weights(run_dir, step: int) -> dict[str, dict[str, torch.Tensor]]:
    folder = RunLayout.at(run_dir).checkpoint(step) / "model"
    return {n: load_file(str(folder / n / "diffusion_pytorch_model.safetensors")) for n in NETS}


def _start(stage: str) -> dict[str, dict[str, torch.Tensor]]:
    from anycharv.training.modules import tiny_networks

    return {n: {k: v.detach().clone() for k, v in net.state_dict().items()} for n, net in tiny_networks(0).items()}


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_workers_take_the_step_one_worker_takes(real_cache, tmp_path, ray_local, strategy):
    # eps well above float32 noise in the gradients: Adam's first step is otherwise sign(gradient),
    # which turns last-bit differences of a near-zero gradient into a full step
    one = _job("runtime.max_steps=1", "train.data.batch_size=4", "train.optim.eps=1e-4")
    run_training(one, str(real_cache["data"]), str(tmp_path / "one"))
    two = _job("runtime.max_steps=1", "train.data.batch_size=2", "runtime.launcher=ray", "runtime.num_workers=2",
               "train.optim.eps=1e-4", f"runtime.strategy={strategy}")
    run_training(two, str(real_cache["data"]), str(tmp_path / "two"))
    a, b, start = _weights(tmp_path / "one", 1), _weights(tmp_path / "two", 1), _start("stage1_image")
    moved = 0
    for net in NETS:
        for key in a[net]:
            torch.testing.assert_close(a[net][key], b[net][key], rtol=1e-5, atol=1e-6)
            moved += int(not torch.equal(a[net][key], start[net][key]))
    assert moved > 50  # the step changed the networks, identically in both runs
    loss_one, loss_two = read_jsonl(tmp_path / "one" / "metrics.jsonl")[0]["loss"], read_jsonl(
        tmp_path / "two" / "metrics.jsonl")[0]["loss"]
    assert loss_one == pytest.approx(loss_two, rel=1e-5)


KILL_SCRIPT = """
import sys
from anycharv.config import load_config
from anycharv.training.config import TrainJob
from anycharv.training.launcher import run_training
args = sys.argv[3:]
run_training(load_config(TrainJob, None, args), sys.argv[1], sys.argv[2])
"""


def test_a_killed_run_resumes_with_the_uninterrupted_losses(synthetic_cache, tmp_path):
    args = ["train.init.preset=tiny", "runtime.launcher=local", "runtime.validation.enabled=false",
            "train.optim.lr=1e-3", "train.optim.warmup_steps=5", "train.modules.ema_decay=0.9",
            "train.data.batch_size=2", "runtime.checkpoint.every=4", "runtime.checkpoint.keep=2",
            "runtime.max_steps=14"]
    clean = tmp_path / "clean"
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(synthetic_cache), str(clean), *args], check=True,
                   timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(synthetic_cache), str(killed), *args])
    layout = RunLayout.at(killed)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        latest = layout.latest_checkpoint()
        steps = len(read_jsonl(layout.metrics))
        if latest is not None and latest[0] >= 8 and steps >= 10:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert layout.latest_checkpoint()[0] < 14
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(synthetic_cache), str(killed), *args], check=True,
                   timeout=300)
    expected = [r["loss"] for r in read_jsonl(clean / "metrics.jsonl")]
    resumed = [r["loss"] for r in read_jsonl(killed / "metrics.jsonl")]
    assert len(expected) == 14 and resumed == expected
    assert [s for s, _ in layout.complete_checkpoints()] == [12, 14]
    for net in NETS:
        for key, value in _weights(clean, 14)[net].items():
            assert torch.equal(value, _weights(killed, 14)[net][key]), f"{net}.{key}"


def _changed(run_dir, steps: int) -> dict[str, set[str]]:
    start, end = _start(""), _weights(run_dir, steps)
    return {n: {k for k in end[n] if not torch.equal(end[n][k], start[n][k])} for n in NETS}


def test_each_stage_changes_only_what_it_trains(synthetic_cache, tmp_path):
    run_training(_job("train.stage=stage2", "runtime.max_steps=2", "train.data.batch_size=1",
                      "train.data.num_frames=4"), str(synthetic_cache), str(tmp_path / "s2"))
    changed = _changed(tmp_path / "s2", 2)
    assert changed["reference_unet"] == set() and changed["pose_guider"] == set()
    assert len(changed["denoising_unet"]) > 50

    run_training(_job("train.stage=stage1_video", "runtime.max_steps=2", "train.data.batch_size=1",
                      "train.data.num_frames=4"), str(synthetic_cache), str(tmp_path / "video"))
    changed = _changed(tmp_path / "video", 2)
    assert changed["reference_unet"] == set() and changed["pose_guider"] == set()
    assert changed["denoising_unet"] and all(".motion_modules." in k for k in changed["denoising_unet"])

    run_training(_job("train.stage=stage1_image", "runtime.max_steps=2", "train.data.batch_size=2"),
                 str(synthetic_cache), str(tmp_path / "image"))
    changed = _changed(tmp_path / "image", 2)
    assert changed["reference_unet"] and changed["pose_guider"]
    assert changed["denoising_unet"] and not any(".motion_modules." in k for k in changed["denoising_unet"])


def test_an_exported_run_runs_through_anycharv_infer(real_cache, tmp_path):
    from anycharv.assets import asset_path
    from anycharv.model.pipeline import AnyCharVPipeline

    run_training(_job("runtime.max_steps=2", "train.data.batch_size=2"), str(real_cache["data"]),
                 str(tmp_path / "run"))
    out = tmp_path / "exported"
    cli = [sys.executable, "-m", "anycharv.cli"]
    subprocess.run([*cli, "export", str(tmp_path / "run"), str(out)], check=True, timeout=300)
    pipe = AnyCharVPipeline.from_pretrained(str(out))
    trained = _weights(tmp_path / "run", 2)["denoising_unet"]
    for key, value in pipe.denoising_unet.state_dict().items():
        assert torch.equal(value, trained[key]), key
    video = tmp_path / "out.mp4"
    done = subprocess.run([*cli, "infer", "--weights", str(out), "--ref", str(asset_path("astronaut.png")),
                           "--video", str(asset_path("sports2d_demo.mp4")), "--out", str(video), "--max-frames", "4",
                           "--steps", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert video.is_file() and video.stat().st_size > 1000


def test_an_fsdp_run_extended_continues_the_longer_run(real_cache, tmp_path, ray_local):
    def job(steps: int) -> TrainJob:
        return _job(f"runtime.max_steps={steps}", "train.data.batch_size=1", "runtime.launcher=ray",
                    "runtime.num_workers=2", "runtime.strategy=fsdp", "runtime.checkpoint.every=2",
                    "train.modules.ema_decay=0.9")

    run_training(job(3), str(real_cache["data"]), str(tmp_path / "long"))
    run_training(job(2), str(real_cache["data"]), str(tmp_path / "short"))
    run_training(job(3), str(real_cache["data"]), str(tmp_path / "short"))
    long, short = (read_jsonl(tmp_path / name / "metrics.jsonl") for name in ("long", "short"))
    assert [r["step"] for r in short] == [1, 2, 3]
    assert [r["loss"] for r in short] == pytest.approx([r["loss"] for r in long], rel=1e-5)
    for net in NETS:
        for key, value in _weights(tmp_path / "long", 3)[net].items():
            torch.testing.assert_close(_weights(tmp_path / "short", 3)[net][key], value, rtol=1e-5, atol=1e-6)


def test_stages_start_from_sd_and_animatediff_weights(synthetic_cache, tmp_path):
    from diffusers import MotionAdapter, UNet2DConditionModel

    torch.manual_seed(0)
    widths = (32, 32, 64)
    unet = UNet2DConditionModel(sample_size=None, in_channels=4, out_channels=4, block_out_channels=widths,
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                                      "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=32, attention_head_dim=2, norm_num_groups=32)
    unet.save_pretrained(str(tmp_path / "sd" / "unet"))
    adapter = MotionAdapter(block_out_channels=widths, motion_layers_per_block=1, motion_num_attention_heads=8,
                            motion_norm_num_groups=32, motion_max_seq_length=24, use_motion_mid_block=True,
                            motion_mid_block_layers_per_block=1)
    adapter.save_pretrained(str(tmp_path / "adapter"))

    image = _job("train.init.preset=null", f"train.init.unet2d={tmp_path / 'sd'}", "runtime.max_steps=1",
                 "train.data.batch_size=2")
    run_training(image, str(synthetic_cache), str(tmp_path / "image"))
    start = unet.state_dict()
    weights = _weights(tmp_path / "image", 1)
    assert weights["reference_unet"]["conv_in.weight"].shape == start["conv_in.weight"].shape
    assert weights["denoising_unet"]["conv_in.weight"].shape[1] == 9

    video = _job("train.init.preset=null", f"train.init.model={tmp_path / 'image'}", "train.stage=stage1_video",
                 f"train.init.motion_module={tmp_path / 'adapter'}", "runtime.max_steps=1", "train.data.batch_size=1",
                 "train.data.num_frames=4", "train.optim.lr=1e-12")
    run_training(video, str(synthetic_cache), str(tmp_path / "video"))
    from anycharv.model.init_weights import load_motion_module

    motion = load_motion_module(tmp_path / "adapter")
    after = _weights(tmp_path / "video", 1)["denoising_unet"]
    key = next(k for k in motion if k.endswith("proj_in.weight"))
    torch.testing.assert_close(after[key], motion[key], rtol=0, atol=1e-9)  # loaded, then a negligible step
    for key in ("conv_in.weight", "down_blocks.0.resnets.0.conv1.weight"):
        assert torch.equal(after[key], weights["denoising_unet"][key]), key  # frozen in the motion stage
