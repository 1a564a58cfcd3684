"""The metric math on hand-made images: masked PSNR / SSIM / L1, SSIM against an independent
implementation of its definition, the Fréchet distance against closed forms,
and LPIPS's defining properties on a real AlexNet with random weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anycharv.errors import InputError
from anycharv.evaluation.feature_metrics import box_crop, frechet_distance, gaussian_stats, square_resize
from anycharv.evaluation.metrics import gaussian_window, l1, pixel_metrics, ssim


def _pair(seed: int = 0, frames: int = 2, height: int = 40, width: int = 36, noise: float = 0.1):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(3, frames, height, width, generator=gen, dtype=torch.float64)
    a = torch.nn.functional.avg_pool2d(a.reshape(-1, 1, height, width), 3, 1, 1).reshape(a.shape)  # some structure
    b = (a + noise * torch.randn(a.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    return a, b


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two (H,W) images by its definition: Gaussian-weighted local statistics over every
    11x11 window that fits in the image, averaged (written independently of the module)."""
    k = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = np.outer(k, k) / np.outer(k, k).sum()
    wx = np.lib.stride_tricks.sliding_window_view(x, (11, 11))
    wy = np.lib.stride_tricks.sliding_window_view(y, (11, 11))
    mx, my = (wx * w).sum(axis=(-2, -1)), (wy * w).sum(axis=(-2, -1))
    vx = (wx**2 * w).sum(axis=(-2, -1)) - mx**2
    vy = (wy**2 * w).sum(axis=(-2, -1)) - my**2
    cxy = (wx * wy * w).sum(axis=(-2, -1)) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return float((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())


def test_ssim_of_identical_images_is_one_and_it_drops_with_noise():
    a, b = _pair()
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    region = torch.zeros(1, *a.shape[1:])
    region[..., 10:30, 8:20] = 1
    assert ssim(a, a, region) == pytest.approx(1.0, abs=1e-12)
    noisy = ssim(a, b)
    assert 0 < noisy < 0.9 and ssim(b, a) == pytest.approx(noisy, abs=1e-12)
    assert ssim(a, _pair(noise=0.3)[1]) < noisy
    assert gaussian_window().sum().item() == pytest.approx(1.0) and len(gaussian_window()) == 11


def test_ssim_matches_its_definition_per_frame_and_channel():
    a, b = _pair(seed=3, frames=3)
    expected = np.mean([_ssim_reference(a[c, f].numpy(), b[c, f].numpy()) for c in range(3) for f in range(3)])
    assert ssim(a, b) == pytest.approx(expected, abs=1e-9)


def test_masked_metrics_see_only_their_region():
    a, _ = _pair(seed=1, frames=2, height=32, width=48)
    b = a.clone()
    b[..., 24:] = (b[..., 24:] + 0.2).clamp(0, 1)  # the right half differs, the left half is exact
    region = torch.zeros(1, 2, 32, 48)
    region[..., :24] = 1
    m = pixel_metrics(a.float(), b.float(), region)
    assert m["psnr_mask"] == 100.0 and m["l1_mask"] == 0.0  # exact inside (PSNR clamps the MSE at 1e-10)
    right = (a[..., 24:] - b[..., 24:]).abs()
    assert m["l1_outside"] == pytest.approx(float(right.mean()), abs=1e-6)
    assert m["l1"] == pytest.approx(float(right.mean()) / 2, abs=1e-6)
    assert m["psnr_outside"] == pytest.approx(10 * math.log10(1 / float(right.pow(2).mean())), abs=2e-3)
    assert m["psnr"] < m["psnr_mask"] and m["psnr"] > m["psnr_outside"]
    # windows far from the seam see identical pixels inside, different ones outside
    assert m["ssim_mask"] > m["ssim"] > m["ssim_outside"]
    inner = torch.zeros_like(region)
    inner[..., 5:27, 5:13] = 1  # every window around these pixels lies in the exact half
    assert ssim(a, b, inner) == pytest.approx(1.0, abs=1e-9)


def test_empty_regions_and_small_frames_give_none():
    a, b = _pair(frames=1, height=16, width=16)
    nothing = torch.zeros(1, 1, 16, 16)
    m = pixel_metrics(a.float(), b.float(), nothing)
    assert m["psnr_mask"] is None and m["l1_mask"] is None and m["ssim_mask"] is None
    assert m["psnr_outside"] == m["psnr"] and m["l1_outside"] == m["l1"] and m["ssim_outside"] == m["ssim"]
    small_a, small_b = _pair(frames=1, height=8, width=20)
    assert ssim(small_a, small_b) is None and l1(small_a, small_b) > 0
    assert pixel_metrics(small_a.float(), small_b.float(), torch.ones(1, 1, 8, 20))["ssim"] is None


def test_frechet_distance_matches_closed_forms():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    # diagonal covariances: ||mu1-mu2||^2 + sum (sqrt(a) - sqrt(b))^2
    expected = 5.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 0.5) ** 2
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-9)
    # the same covariances in a rotated basis (they commute): the same distance
    rot, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    s1, s2 = rot @ np.diag(a) @ rot.T, rot @ np.diag(b) @ rot.T
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)
    # general SPD pair: tr sqrt(S1 S2) is the sum of the square roots of the product's eigenvalues
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    p, q = x @ x.T + 0.1 * np.eye(5), y @ y.T + 0.1 * np.eye(5)
    trace_sqrt = np.sqrt(np.linalg.eigvals(p @ q).real).sum()
    assert frechet_distance(np.zeros(5), p, np.zeros(5), q) == pytest.approx(np.trace(p + q) - 2 * trace_sqrt,
                                                                             rel=1e-9)
    # singular covariances (fewer samples than dimensions): still the closed form, to round-off
    few = rng.standard_normal((3, 8))
    mu, sigma = gaussian_stats(few, ddof=1)
    assert np.linalg.matrix_rank(sigma) == 2 and frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(mu, sigma, mu + 1, 4 * sigma) == pytest.approx(8 + np.trace(sigma), rel=1e-6)


def test_gaussian_stats_use_the_asked_normalisation():
    x = np.random.default_rng(2).standard_normal((10, 3))
    mu, unbiased = gaussian_stats(x, ddof=1)
    _, biased = gaussian_stats(x, ddof=0)
    np.testing.assert_allclose(mu, x.mean(axis=0))
    np.testing.assert_allclose(unbiased, np.cov(x, rowvar=False))
    np.testing.assert_allclose(biased, np.cov(x, rowvar=False, bias=True))
    with pytest.raises(ValueError):
        gaussian_stats(x[:1], ddof=1)


def test_crops_and_square_resize_keep_the_character():
    image = torch.zeros(3, 20, 30)
    image[:, 5:15, 10:14] = 1
    crop = box_crop(image, [9.5, 5.0, 14.0, 15.0])
    assert crop.shape == (3, 10, 5) and crop[:, :, 1:].min() == 1
    assert box_crop(image, [np.nan] * 4).shape == image.shape and box_crop(image, [3, 3, 3, 9]).shape == image.shape
    square = square_resize(crop, 16)
    assert square.shape == (3, 16, 16) and square[:, :, :3].max() < 0.05 and square[:, 8, 8].min() > 0.95


def test_lpips_is_zero_on_identical_images_and_symmetric(metric_weights, tmp_path):
    from anycharv.evaluation.lpips import LPIPS

    net = LPIPS("alex", metric_weights["lpips_backbone"], metric_weights["lpips"])
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 48, generator=gen) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
    same, diff, back = net(x, x), net(x, y), net(y, x)
    assert torch.all(same.abs() < 1e-7) and torch.all(diff > 0) and torch.allclose(diff, back, atol=1e-6)
    assert torch.all(net(x, (x + 0.6 * torch.randn(x.shape, generator=gen)).clamp(-1, 1)) > diff)
    with pytest.raises(InputError, match="no lin0 weight") as err:
        LPIPS("alex", metric_weights["lpips_backbone"], metric_weights["lpips_backbone"])
    assert err.value.input_name.startswith("eval.lpips_weights")
    with pytest.raises(InputError, match="not a torchvision alex state dict"):
        LPIPS("alex", metric_weights["lpips"], metric_weights["lpips"])
