"""Faster solvers on the official schedule (``make_solver``): what they are configured as, that the
pipeline runs them, that parity mode refuses them, and that at equal step counts they get closer to
the 30-step DDIM result than DDIM does (the reason to offer them; random weights, so only numerics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from safetensors.torch import load_file

from anycharv.errors import InputError
from anycharv.model.scheduling import SCHEDULER_CONFIG, SOLVERS, make_solver


@pytest.fixture(scope="module")
def pipe(golden_pipe):
    return golden_pipe


@pytest.fixture(scope="module")
def clip(reference_dir):
    inp = {k: v.numpy() for k, v in load_file(str(reference_dir / "inputs_uint8.safetensors")).items()}
    return inp["ref_image"], inp["tgt_frames"][:6], inp["pose_frames"][:6], inp["tgt_masks"][:6]


def _video(pipe, clip, solver, steps):
    pipe.scheduler = make_solver(solver)
    return pipe(*clip, num_inference_steps=steps, generator=torch.manual_seed(5), context_frames=6, context_overlap=2,
                output_type="np").frames


@pytest.mark.parametrize("name", SOLVERS)
def test_every_solver_uses_the_official_noise_schedule_and_target(name):
    solver = make_solver(name)
    for key in ("prediction_type", "rescale_betas_zero_snr", "timestep_spacing", "beta_start", "beta_end"):
        assert solver.config[key] == SCHEDULER_CONFIG[key], key
    torch.testing.assert_close(solver.alphas_cumprod, make_solver("ddim").alphas_cumprod)
    solver.set_timesteps(6)
    assert int(solver.timesteps[0]) == 999  # trailing spacing starts at the pure-noise end


def test_a_solver_is_refused_where_it_cannot_give_what_was_asked(pipe, clip):
    pipe.scheduler = make_solver("unipc")
    try:
        with pytest.raises(InputError, match="parity mode needs the official DDIMScheduler"):
            pipe(*clip, num_inference_steps=2, context_frames=6, context_overlap=2, parity=True, output_type="latent")
        with pytest.raises(InputError, match="only DDIM takes eta"):
            pipe(*clip, num_inference_steps=2, context_frames=6, context_overlap=2, eta=0.5, output_type="latent")
    finally:
        pipe.scheduler = make_solver("ddim")
    with pytest.raises(InputError, match="solver"):
        make_solver("euler")


def test_multistep_solvers_reach_the_30_step_ddim_result_in_fewer_steps(pipe, clip):
    reference = _video(pipe, clip, "ddim", 30)
    try:
        error = {name: float(np.abs(_video(pipe, clip, name, 6) - reference).mean()) for name in SOLVERS}
    finally:
        pipe.scheduler = make_solver("ddim")
    assert isinstance(make_solver("ddim"), DDIMScheduler)
    assert error["ddim"] > 0  # 6 DDIM steps are not 30
    assert error["dpmpp"] < error["ddim"] and error["unipc"] < error["ddim"], error
