"""DDRM (Kawar, Elad, Ermon, Song, NeurIPS 2022): denoising diffusion restoration in the singular basis
(algorithms.md §8.2).

Variance-exploding units σ_t = √(1−ᾱ_t)/√ᾱ_t; σ = 2·sigma_y; coefficients in the operator's singular basis
(:mod:`.spectral`): x̂ = Vᵀx̂₀, e = Vᵀε, Uᵀy, ȳ_i = (Uᵀy)_i/s_i. Grid: skip = T/steps, pairs
((steps−1)·skip, (steps−2)·skip) … (0, −1) (20 steps: (950, 900) … (0, −1)).
Start (σ_T at the first t): c_i = ȳ_i + √(σ_T² − σ²/s_i²)·z_i where s_i·σ_T > σ, else σ_T·z_i; x = V(c)/σ_T.
Step t → t' (σ' = σ_{t'}, 0 at t' = −1), per component:
    missing (s_i = 0, or the tie s_i·σ' = σ): c_i = x̂_i + σ'√(1−η²)·e_i + σ'η·z_i
    less noisy than y (s_i·σ' < σ):             c_i = x̂_i + σ'√(1−η²)·((Uᵀy)_i − s_i x̂_i)/σ + σ'η·z_i
    noisier than y (s_i·σ' > σ):                c_i = η_b·ȳ_i + (1−η_b)·x̂_i + √(σ'² − σ²η_b²/s_i²)·z_i
    x_{t'} = √ᾱ_{t'}·V(c).
At the last step σ' = 0 and every rule gives c = x̂: the output is the x̂₀ of the t = 0 step. The same η
serves as η_A and η_C (the reference's single ``--eta``). No UNet gradient; NFE = steps (default 20).
The z of the start are Vᵀx_T; the step noise is Vᵀ of ``noise(x)``, one draw per step.
Gaussian-prior benchmark (benchmarks/results/methods_gaussian_cpu.md: 32×32, 4 images, PSNR dB; posterior mean /
baseline in brackets): deblur_gauss σ_y 0.05 23.47 (24.67 / 15.48); sr4 SVD σ_y 0.05 19.70 (21.44 / 20.95);
noiseless deblur 46.14 (109.29 / 40.20); sr4 σ_y 0 21.81 (23.60 / 22.18); inpainting 50 % σ_y 0 23.92 (30.71 / 12.02).
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


def ve_sigma(a: float) -> float:
    return math.sqrt(1 - a) / math.sqrt(a)


def ddrm_start(view: SpectralView, y_bar: torch.Tensor, z: torch.Tensor, sigma_T: float,
               sigma: float) -> torch.Tensor:
    """x_T = V(c)/σ_T with c the start rule above (z: coefficients of N(0, I) noise)."""
    s = view.s
    informative = s * sigma_T > sigma
    spread = (sigma_T**2 - sigma**2 / torch.where(informative, s, 1) ** 2).clamp_min(0).sqrt()
    c = torch.where(informative, y_bar + spread * z, sigma_T * z)
    return view.image(c) / sigma_T


def ddrm_coefficients(view: SpectralView, x0_c: torch.Tensor, eps_c: torch.Tensor, z: torch.Tensor,
                      y_coef: torch.Tensor, y_bar: torch.Tensor, sigma_next: float, sigma: float, eta: float,
                      eta_b: float) -> torch.Tensor:
    """The coefficients c of x_{t'}/√ᾱ_{t'} by the three rules above."""
    s = view.s
    safe_s = torch.where(s > 0, s, 1)
    sn = s * sigma_next
    missing = (s == 0) | (sn == sigma)
    less_noisy = ~missing & (sn < sigma)
    c_missing = x0_c + sigma_next * math.sqrt(1 - eta**2) * eps_c + sigma_next * eta * z
    if sigma > 0:
        c_less = x0_c + sigma_next * math.sqrt(1 - eta**2) * (y_coef - s * x0_c) / sigma + sigma_next * eta * z
    else:
        c_less = c_missing  # never selected: s·σ' < 0 is impossible
    spread = (sigma_next**2 - sigma**2 * eta_b**2 / safe_s**2).clamp_min(0).sqrt()
    c_noisier = eta_b * y_bar + (1 - eta_b) * x0_c + spread * z
    return torch.where(missing, c_missing, torch.where(less_noisy, c_less, c_noisier))


def ddrm_sample(denoiser, operator: Operator, y: torch.Tensor, sigma_y: float, *, steps: int = 20,
                eta: float = 0.85, eta_b: float = 1.0, x_T: torch.Tensor | None = None,
                noise: NoiseSource | None = None, generator: torch.Generator | None = None,
                callback=None) -> torch.Tensor:
    """Restore (B,3,H,W) float32 images ([-1,1] scale, not clamped) from ``y`` with DDRM."""
    sigma = 2 * check_sigma_y(sigma_y)
    eta, eta_b = check_eta("eta", eta), check_eta("eta_b", eta_b)
    schedule, y, x_T, noise = prepare(denoiser, operator, y, x_T, noise, generator)
    view = SpectralView(operator, y.device, "DDRM")
    pairs = time_pairs(steps, schedule.num_timesteps)
    y_coef = view.meas_coef(y)
    y_bar = torch.where(view.s > 0, y_coef / torch.where(view.s > 0, view.s, 1), 0)
    x = ddrm_start(view, y_bar, view.coef(x_T), ve_sigma(schedule.alpha_bar(pairs[0][0])), sigma)
    x0 = x
    for i, (t, t_next) in enumerate(pairs):
        a, a_next = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
        eps = denoiser(x, timestep(x, t)).float()
        x0 = predict_x0(x, eps, a)
        z = view.coef(noise(x))
        c = ddrm_coefficients(view, view.coef(x0), view.coef(eps), z, y_coef, y_bar, ve_sigma(a_next), sigma,
                              eta, eta_b)
        x = math.sqrt(a_next) * view.image(c)
        if callback is not None:
            callback(i, x, x0)
    return x
