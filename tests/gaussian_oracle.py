"""Closed-form posterior means under the GaussianPrior for the circular FFT operators (test helper)."""

import torch

from ddpg.operators import FFTBlur, FFTSuperRes


def posterior_mean(prior, operator, y: torch.Tensor, sigma_y: float) -> torch.Tensor:
    """E[x | y] for x ~ GaussianPrior and y = A x + σ n (σ = 2σ_y): μ + P Aᵀ(A P Aᵀ + σ²I)⁻¹(y − Aμ).
    A P Aᵀ is diagonal in Fourier for a circular blur and for blur + decimation on the LR grid."""
    sigma2 = (2.0 * sigma_y) ** 2
    H, W = operator.img_size
    P = prior.spectrum(H, W).double()
    mu = prior.mean.double().view(1, 3, 1, 1).expand(1, 3, H, W)
    K = operator.spectrum(dtype=torch.float64, full=True)
    resid = y.double() - operator.A(mu.expand(y.shape[0], -1, -1, -1).contiguous())
    if isinstance(operator, FFTBlur):
        gain = P * K.conj() / (K.abs() ** 2 * P + sigma2)
        return mu + torch.fft.ifft2(torch.fft.fft2(resid) * gain).real
    assert isinstance(operator, FFTSuperRes)
    s = operator.scale
    h_lr = torch.fft.ifft2(K.abs() ** 2 * P).real[..., ::s, ::s]  # autocorrelation of the filter K·√P, subsampled
    q = torch.fft.ifft2(torch.fft.fft2(resid) / (torch.fft.fft2(h_lr) + sigma2)).real
    back = torch.fft.fft2(operator.upsample_zeros(q)) * K.conj() * P
    return mu + torch.fft.ifft2(back).real


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR in dB on the [0, 1] scale (no clamping: Gaussian samples may leave the range)."""
    mse = float((((x.double() - ref.double()) / 2) ** 2).mean())
    return 10 * torch.log10(torch.tensor(1.0 / mse)).item()
