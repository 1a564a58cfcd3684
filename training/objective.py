"""The diffusion objective of every stage: v-prediction on the zero-terminal-SNR schedule the
sampler uses (``anycharv.model.scheduling``), with offset noise, min-SNR weighting and condition
dropout.

Each sample's timestep, noise and dropout come from a generator seeded by the sample itself
(``sample_seed``, drawn by the dataset from seed, epoch and position), not from a global stream:
the draws do not depend on the batch a sample lands in, the rank that reads it or what ran before,
so 2 workers see what 1 worker with the same global batch sees and a resumed run draws what the
uninterrupted one drew.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anycharv.model.scheduling import make_scheduler


@dataclass
class Draws:
    """Per-sample random choices of one batch (on the CPU until ``to``)."""

    timesteps: torch.Tensor  # (B,) int64
    noise: torch.Tensor  # like the target latents
    drop: torch.Tensor  # (B,) bool: no CLIP context, no reference attention

    def to(self, device: torch.device) -> "Draws":
        return Draws(self.timesteps.to(device), self.noise.to(device), self.drop.to(device))


class Objective:
    """v-prediction loss with the knobs of ``ObjectiveConfig``."""

    def __init__(self, noise_offset: float = 0.0, min_snr_gamma: float | None = None,
                 condition_dropout: float = 0.0):
        self.scheduler = make_scheduler()
        self.noise_offset, self.min_snr_gamma = noise_offset, min_snr_gamma
        self.condition_dropout = condition_dropout
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        alphas = self.scheduler.alphas_cumprod.double()
        self.snr = (alphas / (1.0 - alphas).clamp(min=1e-20)).float()  # 0 at the terminal step (zero SNR)

    def draw(self, seeds: list[int], shape: tuple[int, ...]) -> Draws:
        """Timestep, noise (+ offset per channel) and dropout of each sample, from its own seed."""
        steps, noises, drops = [], [], []
        for seed in seeds:
            gen = torch.Generator().manual_seed(int(seed))
            steps.append(torch.randint(0, self.num_train_timesteps, (1,), generator=gen))
            noise = torch.randn(shape, generator=gen)
            offset = torch.randn((shape[0],) + (1,) * (len(shape) - 1), generator=gen)
            noises.append(noise + self.noise_offset * offset)
            drops.append(torch.rand((1,), generator=gen) < self.condition_dropout)
        return Draws(torch.cat(steps), torch.stack(noises), torch.cat(drops))

    def noisy_and_target(self, latents: torch.Tensor, draws: Draws) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy latents x_t, v target) for clean ``latents`` (B, C, ...)."""
        noisy = self.scheduler.add_noise(latents, draws.noise, draws.timesteps)
        target = self.scheduler.get_velocity(latents, draws.noise, draws.timesteps)
        return noisy, target

    def weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """(B,) loss weights: min(SNR, gamma) / (SNR + 1) for v-prediction (min-SNR paper), else 1.
        On the zero-SNR schedule the terminal step (SNR 0) gets weight 0 under min-SNR."""
        if self.min_snr_gamma is None:
            return torch.ones(timesteps.shape, dtype=torch.float32, device=timesteps.device)
        snr = self.snr.to(timesteps.device)[timesteps]
        return torch.clamp(snr, max=self.min_snr_gamma) / (snr + 1.0)

    def loss(self, prediction: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Weighted per-sample MSE, averaged over the batch (float32)."""
        per_sample = (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        return (per_sample * self.weights(timesteps)).mean()
