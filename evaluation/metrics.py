"""Pixel metrics of a generated clip against its target, over the whole frame and inside / outside
a region (the condition's mask): PSNR, SSIM and L1, on float frames in [0, 1].

- PSNR: training validation's ``psnr`` (one MSE over every pixel, channel and frame of the region),
  so an evaluation and a training run's validation report the same number for the same clips.
- L1: the mean absolute difference over the region's pixels and channels.
- SSIM: Wang et al.'s SSIM with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data
  range 1, computed per frame and channel, averaged over channels. The map exists where the whole
  window fits in the frame (a 5-pixel border is left out, as ``skimage.metrics.structural_similarity``
  with ``gaussian_weights=True, use_sample_covariance=False`` leaves it out of its mean), and is
  averaged over the region's pixels inside that area. Frames smaller than 11 pixels get None.

A region with no pixel gives None for its metrics (an empty box, a mask that covers every pixel).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from anycharv.training.validation import psnr

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """(size,) float64 normalised 1D Gaussian taps centred on the middle one."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


def _blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filtering of (N,1,H,W) without padding -> (N,1,H-k+1,W-k+1)."""
    k = len(taps)
    x = F.conv2d(x, taps.view(1, 1, 1, k))
    return F.conv2d(x, taps.view(1, 1, k, 1))


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of (3,F,H,W) (or (C,F,H,W)) images in [0, 1] -> (F,H-10,W-10) float64, averaged over channels."""
    channels, frames, height, width = a.shape
    x = a.detach().to(torch.float64).permute(1, 0, 2, 3).reshape(frames * channels, 1, height, width)
    y = b.detach().to(torch.float64).permute(1, 0, 2, 3).reshape(frames * channels, 1, height, width)
    taps = gaussian_window().to(x.device)
    mu_x, mu_y = _blur(x, taps), _blur(y, taps)
    var_x = _blur(x * x, taps) - mu_x**2
    var_y = _blur(y * y, taps) - mu_y**2
    cov = _blur(x * y, taps) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.view(frames, channels, *s.shape[-2:]).mean(dim=1)


def _crop_border(region: torch.Tensor) -> torch.Tensor:
    """(1,F,H,W) region -> (F,H-10,W-10): the pixels where the SSIM map is defined."""
    r = (SSIM_WINDOW - 1) // 2
    return region[0, :, r:region.shape[-2] - r, r:region.shape[-1] - r]


def ssim(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor | None = None, *,
         map_: torch.Tensor | None = None) -> float | None:
    """Mean SSIM of (3,F,H,W) images over ``region`` ((1,F,H,W) 0/1; None: the whole frame)."""
    if min(a.shape[-2:]) < SSIM_WINDOW:
        return None
    values = ssim_map(a, b) if map_ is None else map_
    if region is None:
        return float(values.mean())
    weight = _crop_border(region.to(torch.float64))
    total = float(weight.sum())
    if total < 1:
        return None
    return float((values * weight).sum() / total)


def l1(a: torch.Tensor, b: torch.Tensor, region: torch.Tensor | None = None) -> float | None:
    """Mean absolute difference of (3,F,H,W) images over ``region`` ((1,F,H,W) 0/1; None: everything)."""
    err = (a.to(torch.float64) - b.to(torch.float64)).abs()
    if region is None:
        return float(err.mean())
    weight = region.to(torch.float64).expand_as(err)
    total = float(weight.sum())
    if total < 1:
        return None
    return float((err * weight).sum() / total)


def pixel_metrics(generated: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> dict[str, float | None]:
    """Every pixel metric of ``generated`` against ``target`` ((3,F,H,W) in [0,1]) over the frame,
    inside ``region`` ((1,F,H,W), 1 inside) and outside it."""
    region = (region > 0.5).to(torch.float32)
    outside = 1 - region
    out: dict[str, float | None] = {
        "psnr": psnr(generated, target), "psnr_mask": psnr(generated, target, region),
        "psnr_outside": psnr(generated, target, outside),
    }
    values = ssim_map(generated, target) if min(generated.shape[-2:]) >= SSIM_WINDOW else None
    for name, where in (("ssim", None), ("ssim_mask", region), ("ssim_outside", outside)):
        out[name] = None if values is None else ssim(generated, target, where, map_=values)
    out.update(l1=l1(generated, target), l1_mask=l1(generated, target, region),
               l1_outside=l1(generated, target, outside))
    return {k: (None if v is None or not math.isfinite(v) else round(float(v), 6)) for k, v in out.items()}
