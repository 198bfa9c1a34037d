"""GaussianPrior: exact ε-prediction and spectrum fitting."""

import math

import torch

from conftest import rel_err
from ddpg.models import GaussianPrior, as_denoiser, create_prior
from ddpg.schedule import linear_schedule


def _dense_dft(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    return torch.exp(-2j * math.pi * k[:, None] * k[None] / n) / math.sqrt(n)


def test_eps_prediction_equals_dense_closed_form():
    """ε = √(1−ā)·Σ_t⁻¹(x_t − √ā μ) with Σ_t = ā C + (1−ā) I and C the prior covariance, built densely."""
    prior = create_prior("gaussian")
    den = as_denoiser(prior)
    H = W = 8
    P = prior.spectrum(H, W).double()
    F = torch.kron(_dense_dft(H), _dense_dft(W))  # orthonormal 2-D DFT on row-major pixels
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    t = torch.tensor([5.0, 700.0])
    sched = linear_schedule()
    eps = den(x.float(), t).double()
    for b in range(2):
        a = sched.alpha_bar(int(t[b]))
        for c in range(3):
            cov = (F.conj().T @ torch.diag(P[c].flatten().to(torch.complex128)) @ F).real
            sigma = a * cov + (1 - a) * torch.eye(H * W, dtype=torch.float64)
            r = x[b, c].flatten() - math.sqrt(a) * float(prior.mean[c])
            ref = math.sqrt(1 - a) * torch.linalg.solve(sigma, r)
            # float32 FFT maths against a float64 dense solve; near t = 0 Σ_t is ill-conditioned (κ ≈ 1e4)
            assert rel_err(eps[b, c].flatten(), ref) < 1e-4


def test_fit_recovers_a_known_spectrum():
    truth = create_prior("gaussian")
    imgs = truth.sample(512, 16, generator=torch.Generator().manual_seed(1))
    fitted = GaussianPrior.fit(imgs)
    P_true = truth.spectrum(16, 16)
    # the periodogram of 512 images: each frequency averages ≥ 512 χ² draws → ≈ 6 % standard error
    ratio = fitted.spectrum(16, 16) / P_true
    ratio[:, 0, 0] = 1  # DC also absorbs the mean estimate
    assert (ratio.mean() - 1).abs() < 0.02
    assert ratio.std() < 0.12
    assert torch.allclose(fitted.mean, truth.mean, atol=0.05)
    law = GaussianPrior.fit(imgs, law=True).config["law"]
    assert abs(law["alpha"] - truth.config["law"]["alpha"]) < 0.2


def test_default_law_works_at_any_size_and_samples_are_image_like():
    prior = create_prior("gaussian")
    x = prior.sample(4, (32, 48), generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 32, 48)
    assert 0.2 < float(x.std()) < 1.0  # the fitted law gives image-like contrast on the [-1, 1] scale
