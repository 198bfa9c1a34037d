"""DDNM and DDNM+ (Wang, Yu, Zhang, ICLR 2023): range/null-space decomposition (algorithms.md §8.1).

Grid and start as DDPG (100 pairs (990, 980) … (0, −1), x_T ~ N(0, I)); a = ᾱ_t, a' = ᾱ_{t'}, σ = 2·sigma_y.

σ = 0 (DDNM), per step:   x̂₀ = (x_t − √(1−a)ε)/√a;   x̂₀' = x̂₀ − A⁺(A x̂₀ − y);
                           x_{t'} = √a'·x̂₀' + √(1−a')·(η·z + √(1−η²)·ε);   output: the final x (= x̂₀').
σ > 0 (DDNM+), with α = √a', s_t = √(1−a') and the singular values s_i (see :mod:`.spectral`):
    x̂₀' = x̂₀ − V Λ Vᵀ A⁺(A x̂₀ − y),  λ_i = 1 if s_t ≥ ασ/s_i else s_i·s_t·√(1−η²)/(ασ);
    x_{t'} = α·x̂₀' + V(d₁ ⊙ Vᵀz + d₂ ⊙ Vᵀε) with (d₁, d₂) = (s_t·η, s_t·√(1−η²)) for s_i = 0,
    (√(s_t² − α²σ²/s_i²), 0) for s_t > ασ/s_i and (s_t·η, 0) otherwise.
At the last step (s_t = 0) every λ_i = 0, so the DDNM+ output is the unguided x̂₀ of t = 0 (as DDPG's σ > 0).
DDNM+ needs the singular basis: SVD operators and circular FFT blurs (exact, via the DFT); FFT SR with σ > 0
is refused (use impl="svd"). No UNet gradient; NFE = steps.
With σ > 0, η_b = 1 and the same η, these rules are DDRM's three per-component rules in VP units (λ = 1 ↔ the
"noisier than y" rule, λ < 1 ↔ "less noisy", s_i = 0 ↔ "missing"); only the start differs, which the tests use
as a cross-check.
Gaussian-prior benchmark (benchmarks/results/methods_gaussian_cpu.md: 32×32, 4 images, PSNR dB; posterior mean /
baseline in brackets): deblur_gauss σ_y 0.05 (DDNM+) 22.73 (24.67 / Tikhonov 15.48); sr4 SVD σ_y 0.05 19.69
(21.44 / bicubic 20.95); noiseless deblur 105.58 (109.29 / 40.20, exact A⁺); sr4 σ_y 0 21.40 (23.60 / 22.18);
inpainting 50 % σ_y 0 27.27 (30.71 / A⁺y 12.02).
"""

from __future__ import annotations

import math

import torch

from ddpg.checks import check_sigma_y
from ddpg.operators.base import Operator
from ddpg.schedule import time_pairs

from .common import check_eta, predict_x0, prepare, timestep
from .ddpg import NoiseSource
from .spectral import SpectralView


def ddnm_plus_factors(s: torch.Tensor, alpha: float, s_t: float, sigma: float, eta: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(λ, d₁, d₂) per singular value s (σ > 0), each shaped like s."""
    measured = s > 0
    thresh = alpha * sigma / torch.where(measured, s, 1)  # ασ/s_i
    clean_enough = s_t >= thresh
    lam = torch.where(clean_enough, 1.0, s * s_t * math.sqrt(1 - eta**2) / (alpha * sigma))
    lam = torch.where(measured, lam, 0.0)
    d1 = torch.where(s_t > thresh, (s_t**2 - thresh**2).clamp_min(0).sqrt(), s_t * eta)
    d1 = torch.where(measured, d1, s_t * eta)
    d2 = torch.where(measured, torch.zeros_like(s), s_t * math.sqrt(1 - eta**2))
    return lam, d1, d2


def ddnm_sample(denoiser, operator: Operator, y: torch.Tensor, sigma_y: float, *, steps: int = 100,
                eta: float = 0.85, x_T: torch.Tensor | None = None, noise: NoiseSource | None = None,
                generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Restore (B,3,H,W) float32 images ([-1,1] scale, not clamped) from ``y``; DDNM+ when sigma_y > 0."""
    sigma = 2 * check_sigma_y(sigma_y)
    eta = check_eta("eta", eta)
    schedule, y, x, noise = prepare(denoiser, operator, y, x_T, noise, generator)
    view = SpectralView(operator, y.device, "DDNM+ (sigma_y > 0)") if sigma > 0 else None
    for i, (t, t_next) in enumerate(time_pairs(steps, schedule.num_timesteps)):
        a, a_next = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
        eps = denoiser(x, timestep(x, t)).float()
        x0 = predict_x0(x, eps, a)
        correction = operator.pinv(operator.A(x0) - y)
        z = noise(x)
        alpha, s_t = math.sqrt(a_next), math.sqrt(1 - a_next)
        if view is None:
            x0_c = x0 - correction
            x = alpha * x0_c + s_t * (eta * z + math.sqrt(1 - eta**2) * eps)
        else:
            lam, d1, d2 = ddnm_plus_factors(view.s, alpha, s_t, sigma, eta)
            x0_c = x0 - view.image(lam * view.coef(correction))
            x = alpha * x0_c + view.image(d1 * view.coef(z) + d2 * view.coef(eps))
        if callback is not None:
            callback(i, x, x0)
    return x
