"""The sampler AnyCharV was trained for: DDIM, v-prediction, zero-terminal-SNR, trailing spacing.

The released weights were trained on the v target with rescaled (zero-SNR) betas; any other
scheduler setting silently degrades results, so the configuration lives in one place.

``make_solver`` gives faster multistep solvers on the same noise schedule (DPM-Solver++ 2M, UniPC
2M): fewer steps for nearly the DDIM output. They are options, not the default: with random weights
their closeness to DDIM says only how close the solvers are numerically, not what real weights show.
"""

from __future__ import annotations

from typing import Any

from diffusers import DDIMScheduler

__all__ = ["SCHEDULER_CONFIG", "SOLVERS", "make_scheduler", "make_solver"]

SOLVERS = ("ddim", "dpmpp", "unipc")

SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "clip_sample": False,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
}


def make_scheduler(**overrides: Any) -> DDIMScheduler:
    """A fresh ``DDIMScheduler`` with the official settings; ``overrides`` replace single keys."""
    config = dict(SCHEDULER_CONFIG)
    config.update(overrides)
    return DDIMScheduler(**config)


def make_solver(name: str = "ddim", **overrides: Any):
    """The scheduler of solver ``name`` (one of ``SOLVERS``) on the official noise schedule and
    prediction type; ``"ddim"`` is ``make_scheduler()``. Both multistep solvers are second order,
    predict x0 from v and end on sigma 0 (the zero-SNR schedule's last step)."""
    from anycharv.errors import InputError

    if name == "ddim":
        return make_scheduler(**overrides)
    shared = {key: SCHEDULER_CONFIG[key] for key in ("num_train_timesteps", "beta_start", "beta_end",
                                                      "beta_schedule", "steps_offset", "prediction_type",
                                                      "rescale_betas_zero_snr", "timestep_spacing")}
    shared.update(solver_order=2, final_sigmas_type="zero")
    if name == "dpmpp":
        from diffusers import DPMSolverMultistepScheduler

        return DPMSolverMultistepScheduler(**{**shared, "algorithm_type": "dpmsolver++", **overrides})
    if name == "unipc":
        from diffusers import UniPCMultistepScheduler

        return UniPCMultistepScheduler(**{**shared, "predict_x0": True, **overrides})
    raise InputError("solver", f"expected one of {SOLVERS}, got {name!r}")
