"""Image loading edge cases, atomic writes, and PSNR/SSIM against hand computations."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ddpg.errors import InputError
from ddpg.io import load_image, save_image
from ddpg.metrics import psnr, ssim


def test_psnr_and_ssim_by_hand():
    gt = torch.full((3, 32, 32), 0.5, dtype=torch.float64)
    pred = gt + 0.1  # MSE = 0.01 → PSNR = 20 dB exactly
    assert psnr(pred, gt) == pytest.approx(20.0, abs=1e-9)
    # constant images: μx = 0.6, μy = 0.5, all variances 0 → SSIM = (2·0.6·0.5 + c1)/(0.6² + 0.5² + c1)
    c1 = 0.01**2
    assert ssim(pred, gt) == pytest.approx((2 * 0.3 + c1) / (0.36 + 0.25 + c1), rel=1e-9)
    assert ssim(gt, gt) == pytest.approx(1.0)


def test_ssim_matches_a_direct_window_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 11, 11, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.rand(1, 11, 11, generator=g, dtype=torch.float64)).clamp(0, 1)
    # an 11×11 image has exactly one valid window: compute its weighted statistics by hand
    k = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 1.5**2)).double()
    w = torch.outer(k, k) / torch.outer(k, k).sum()
    mx, my = (w * x[0]).sum(), (w * y[0]).sum()
    vx, vy = (w * x[0] ** 2).sum() - mx**2, (w * y[0] ** 2).sum() - my**2
    cxy = (w * x[0] * y[0]).sum() - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ref = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim(x, y) == pytest.approx(float(ref), rel=1e-9)
    assert psnr(x, y) == pytest.approx(10 * math.log10(1 / float(((x - y) ** 2).mean())), rel=1e-12)


def test_load_modes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert torch.allclose(load_image(tmp_path / "a.png"), torch.tensor(rgb / 255.0).permute(2, 0, 1).float())
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").shape == (3, 8, 6)
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(tmp_path / "d.png")
    assert torch.allclose(load_image(tmp_path / "d.png"), torch.ones(3, 4, 4))
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "rgba.png")
    with pytest.warns(UserWarning, match="alpha"):
        assert load_image(tmp_path / "rgba.png").shape == (3, 8, 6)
    # EXIF orientation 6 (rotate 90° clockwise to display) turns 8×6 into 6×8
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (3, 6, 8)


def test_corrupt_image_and_atomic_save(tmp_path, monkeypatch):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="bad.png: cannot read image"):
        load_image(tmp_path / "bad.png")
    target = tmp_path / "out.png"
    save_image(torch.zeros(3, 4, 4), target)
    before = target.read_bytes()

    def explode(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", explode)
    with pytest.raises(OSError):
        save_image(torch.ones(3, 4, 4), target)
    assert target.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
