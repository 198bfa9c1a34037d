"""Observations (degrade) and the measurement-only baselines."""

import pytest
import torch
import torch.nn.functional as F

from ddpg.errors import OperatorError
from ddpg.operators import baseline, bicubic_upsample, degrade, make_operator, pinv_baseline, tikhonov
from ddpg.operators.baselines import auto_baseline_name


def smooth_image(n: int) -> torch.Tensor:
    """A band-limited test image (B=1, 3, n, n) in [-1, 1]: a few low-frequency cosines per channel."""
    i = torch.arange(n, dtype=torch.float64) * 2 * torch.pi / n
    rows, cols = torch.meshgrid(i, i, indexing="ij")
    return torch.stack([0.4 * torch.cos(rows + c) * torch.sin(2 * cols - c) + 0.3 * torch.cos(cols)
                        for c in (0.0, 1.0, 2.0)])[None]


def test_degrade_uses_the_generator_and_matches_a_manual_draw():
    op = make_operator("sr_bicubic", 32, impl="fft")
    x = smooth_image(32)
    y = degrade(x, op, 0.05, generator=torch.Generator().manual_seed(7))
    noise = torch.randn(op.meas_shape(1), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.allclose(y, op.A(x) + 0.1 * noise, atol=1e-12)
    assert torch.equal(degrade(x, op, 0.0, seed=1), op.A(x))
    with pytest.raises(OperatorError, match="not both"):
        degrade(x, op, 0.05, seed=1, generator=torch.Generator())


def test_centred_bicubic_upsampling_is_torch_interpolate():
    y = torch.randn(2, 3, 8, 12, dtype=torch.float64)
    ref = F.interpolate(y, size=(32, 48), mode="bicubic", align_corners=False)
    assert torch.allclose(bicubic_upsample(y, (32, 48), (1.5, 1.5)), ref, atol=1e-12)
    assert torch.equal(bicubic_upsample(y, (32, 48)), ref)


def test_sample_offset_shifts_the_upsampled_grid():
    """Moving the samples by one whole LR pixel (4 HR pixels) shifts the result by 4 pixels (interior)."""
    y = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    centred = bicubic_upsample(y, (64, 64), (1.5, 1.5))
    shifted = bicubic_upsample(y, (64, 64), (5.5, 1.5 - 4))
    assert torch.allclose(shifted[..., 12:-12, 12:-12], centred[..., 8:-16, 16:-8], atol=1e-12)


@pytest.mark.parametrize("impl", ["fft", "svd"])
def test_sr_baseline_is_phase_aware(impl):
    """The FFT SR operator samples at 4r (not the block centre): its baseline must follow, the SVD one
    is block-centred. The phase-aware baseline beats a half-block-misaligned one by a wide margin."""
    op = make_operator("sr_bicubic", 64, impl=impl)
    x = smooth_image(64)
    y = op.A(x)
    err = float((baseline(op, y) - x)[..., 8:-8, 8:-8].abs().max())
    wrong_offset = (0.0, 0.0) if impl == "svd" else (1.5, 1.5)
    err_wrong = float((bicubic_upsample(y, (64, 64), wrong_offset) - x)[..., 8:-8, 8:-8].abs().max())
    assert err < 0.03 and err_wrong > 5 * err  # measured: 0.017 vs 0.17 for both


def normal_equations_residual(op, x_hat, y, eta):
    """‖(AᵀA + ηI)x̂ − Aᵀy‖ / ‖Aᵀy‖: zero exactly for the Tikhonov solution argmin ‖Ax − y‖² + η‖x‖²."""
    rhs = op.At(y)
    return float((op.At(op.A(x_hat)) + eta * x_hat - rhs).norm() / rhs.norm())


def test_tikhonov_and_pinv_baselines_solve_their_problems():
    """Checked against the problems they solve, not against the operator methods they call: Tikhonov's
    normal equations (AᵀA + ηI)x = Aᵀy with the η asked for (default 1e-2), A⁺ of an invertible blur is its
    inverse, and closed forms for A = I (y/(1+η)), a mask (y on kept pixels) and the grey weights w
    (w·g/(‖w‖² + η))."""
    op = make_operator("deblur_gauss", 32, kernel_size=5, sigma=1.0)
    x = smooth_image(32)
    y = op.A(x)
    for eta, got in ((1e-3, tikhonov(op, y, 1e-3)), (1e-3, baseline(op, y, 1e-3)), (1e-2, baseline(op, y)),
                     (1e-2, tikhonov(op, y))):
        assert normal_equations_residual(op, got, y, eta) < 1e-10, eta
    assert normal_equations_residual(op, baseline(op, y, 1e-3), y, 1e-2) > 1e-3  # the η matters
    assert float((pinv_baseline(op, y) - x).abs().max()) < 1e-8  # this blur is invertible
    assert float((baseline(op, y, method="pinv") - x).abs().max()) < 1e-8
    ident = make_operator("denoising", 8)
    yn = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(baseline(ident, yn, 0.25), yn / 1.25, atol=1e-14)
    assert torch.allclose(baseline(ident, yn, method="pinv"), yn, atol=1e-14)
    hole = make_operator("inpainting", 8, box=(2, 2, 3, 3))
    kept = torch.ones(8, 8, dtype=torch.float64)
    kept[2:5, 2:5] = 0
    assert torch.allclose(baseline(hole, yn * kept, method="pinv"), yn * kept, atol=1e-14)
    assert torch.allclose(baseline(hole, yn * kept, 0.5), yn * kept / 1.5, atol=1e-14)
    grey = make_operator("colorization", 8)
    g = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    w = torch.tensor([0.3333, 0.3334, 0.3333], dtype=torch.float64).view(1, 3, 1, 1)
    w2 = 0.3333**2 * 2 + 0.3334**2
    assert torch.allclose(baseline(grey, g, 0.1), w * g / (w2 + 0.1), atol=1e-14)
    assert torch.allclose(baseline(grey, g, method="pinv"), w * g / w2, atol=1e-14)


def test_baseline_rejects_bad_methods():
    with pytest.raises(OperatorError, match="method must be one of"):
        baseline(make_operator("denoising", 8), torch.zeros(1, 3, 8, 8), method="bilinear")
    with pytest.raises(OperatorError, match="needs an SR operator"):
        baseline(make_operator("denoising", 8), torch.zeros(1, 3, 8, 8), method="bicubic")
    with pytest.raises(OperatorError, match="measurement must have shape"):
        baseline(make_operator("sr4", 32), torch.zeros(1, 3, 16, 16))


@pytest.mark.parametrize("task, params, name", [
    ("sr_bicubic", {"scale": 2, "impl": "svd"}, "bicubic"), ("sr_bicubic", {"scale": 2, "impl": "fft"}, "bicubic"),
    ("sr_avgpool", {"scale": 4}, "bicubic"), ("deblur_gauss", {"impl": "fft"}, "tikhonov (eta=0.01)"),
    ("deblur_gauss", {"impl": "svd"}, "tikhonov (eta=0.01)"), ("inpainting", {}, "tikhonov (eta=0.01)"),
    ("denoising", {}, "tikhonov (eta=0.01)"), ("colorization", {}, "tikhonov (eta=0.01)")])
def test_the_reported_baseline_names_what_baseline_computes(task, params, name):
    """Every SR scale (×2 as well as ×4) is upsampled bicubically; every other operator, with or without a
    ``scale`` attribute, gets Tikhonov with η = 1e-2; the name a sidecar reports says which."""
    op = make_operator(task, 16, **params)
    y = op.A(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert auto_baseline_name(op) == name
    expected = (bicubic_upsample(y, op.img_size, getattr(op, "sample_offset", None)) if name == "bicubic"
                else tikhonov(op, y, 1e-2))
    assert torch.allclose(baseline(op, y), expected, atol=1e-6)
