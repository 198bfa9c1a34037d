"""PSNR and SSIM against hand computations and an independent SciPy implementation; LPIPS availability."""

import math

import numpy as np
import pytest
import torch
from scipy.signal import correlate2d

from ddpg.errors import InputError
from ddpg.metrics import LPIPS, psnr, ssim
from metric_oracles import C1, C2, checkerboard_ssim_by_hand


def checkerboard(H: int, W: int, mean: list[float], amp: list[float]) -> torch.Tensor:
    """x[c, i, j] = mean[c] + amp[c]·(−1)^(i+j), float64."""
    sign = (-1.0) ** (torch.arange(H)[:, None] + torch.arange(W)[None, :]).double()
    return torch.stack([m + a * sign for m, a in zip(mean, amp, strict=True)])


def scipy_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al.'s SSIM with SciPy's correlate2d (valid), per channel, averaged."""
    u = np.arange(11) - 5.0
    g = np.exp(-(u**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    maps = []
    for xc, yc in zip(x, y, strict=True):
        def filt(t):
            return correlate2d(t, w, mode="valid")
        mx, my = filt(xc), filt(yc)
        vx, vy, cxy = filt(xc * xc) - mx**2, filt(yc * yc) - my**2, filt(xc * yc) - mx * my
        maps.append((2 * mx * my + C1) * (2 * cxy + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2)))
    return float(np.mean(maps))


def test_constant_images_by_hand():
    a, b = 100 / 255, 110 / 255
    x, y = torch.full((3, 32, 32), a), torch.full((3, 32, 32), b)
    assert psnr(y, x) == pytest.approx(20 * math.log10(255 / 10), abs=1e-5)  # float32 inputs: 1e-5 dB
    assert ssim(y, x) == pytest.approx((2 * a * b + C1) / (a**2 + b**2 + C1), rel=1e-6)
    assert psnr(x, x) == math.inf and ssim(x, x) == pytest.approx(1.0, abs=1e-12)


def test_checkerboards_by_hand():
    a, e, b, f = 128 / 255, 40 / 255, 100 / 255, 20 / 255
    x = checkerboard(32, 32, [a] * 3, [e] * 3)
    y = checkerboard(32, 32, [b] * 3, [f] * 3)
    # the difference is (a − b) ± (e − f) on half the pixels each
    assert psnr(y, x) == pytest.approx(-10 * math.log10((a - b) ** 2 + (e - f) ** 2), abs=1e-9)
    assert ssim(y, x) == pytest.approx(checkerboard_ssim_by_hand(b, f, a, e), abs=1e-12)
    # SSIM is symmetric; per-channel values are averaged
    z = checkerboard(32, 32, [a, b, a], [e, f, f])
    by_hand = (checkerboard_ssim_by_hand(a, e, a, e) + checkerboard_ssim_by_hand(b, f, a, e)
               + checkerboard_ssim_by_hand(a, f, a, e)) / 3
    assert ssim(z, x) == pytest.approx(by_hand, abs=1e-12) and ssim(x, z) == pytest.approx(by_hand, abs=1e-12)


def test_ssim_matches_scipy_on_random_images():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 24, 30, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(3, 24, 30, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert ssim(y, x) == pytest.approx(scipy_ssim(y.numpy(), x.numpy()), abs=1e-12)
    mse = float(((y - x) ** 2).mean())
    assert psnr(y, x) == pytest.approx(10 * math.log10(1 / mse), abs=1e-9)


def test_prediction_is_clamped_and_shapes_are_checked():
    gt = torch.full((3, 16, 16), 0.9)
    over = torch.full((3, 16, 16), 1.3)  # clamped to 1 → error 0.1 → 20 dB
    assert psnr(over, gt) == pytest.approx(20.0, abs=1e-5)
    with pytest.raises(InputError, match="same shape"):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(InputError, match="at least 11"):
        ssim(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))


def test_lpips_reports_how_to_enable_it_when_unavailable():
    metric, why = LPIPS.load()
    if metric is None:
        assert "LPIPS not computed" in why and "alexnet-owt-7be5be79.pth" in why
    else:  # pragma: no cover - only where lpips and the AlexNet weights are installed
        x = torch.rand(3, 64, 64)
        assert metric(x, x) == pytest.approx(0.0, abs=1e-6) and metric(x, 1 - x) > 0.1
