"""Fit the tiny VAE to some frames, so that tiny-preset runs decode to pictures, not noise.

The tiny preset's VAE is random: whatever a tiny model learns in its latent space decodes to
colour noise. A few hundred Adam steps of plain reconstruction on random crops of real frames give
it a usable (blurry) encode/decode, which makes a demo's output show what training did. The VAE is
fully convolutional, so crops of ``patch`` pixels train it for any frame size.
"""

from __future__ import annotations

import numpy as np
import torch


def fit_tiny_vae(frames: np.ndarray, steps: int = 250, seed: int = 0, patch: int = 32, batch: int = 8,
                 lr: float = 2e-3):
    """The tiny preset's VAE (seeded ``seed``) trained to reconstruct ``frames`` ((N,H,W,3) uint8)."""
    from anycharv.model.tiny import build_tiny_components

    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[1:3]) < patch:
        raise ValueError(f"frames: expected (N,H,W,3) with sides >= {patch}, got {frames.shape}")
    vae = build_tiny_components(seed=seed, with_image_encoder=False)["vae"].train()
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1
    spans = (pixels.shape[2] - patch + 1, pixels.shape[3] - patch + 1)  # crop corners per axis
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    for _ in range(steps):
        picks = torch.randint(len(pixels), (batch,), generator=gen)
        y0, x0 = (int(v) % span for v, span in zip(torch.randint(max(spans), (2,), generator=gen), spans))
        x = pixels[picks, :, y0:y0 + patch, x0:x0 + patch]
        loss = torch.nn.functional.mse_loss(vae.decode(vae.encode(x).latent_dist.mean).sample, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vae.eval()
