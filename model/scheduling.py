"""The sampler AnyCharV was trained for: DDIM, v-prediction, zero-terminal-SNR, trailing spacing.

The released weights were trained on the v target with rescaled (zero-SNR) betas; any other
scheduler setting silently degrades results, so the configuration lives in one place.
"""

from __future__ import annotations

from typing import Any

from diffusers import DDIMScheduler

__all__ = ["SCHEDULER_CONFIG", "make_scheduler"]

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
