"""DiffPIR (Zhu et al., CVPR-W NTIRE 2023): plug-and-play diffusion with a closed-form data step
(algorithms.md §8.3).

σ̄_t = √(1−ᾱ_t)/√ᾱ_t, σ_n = max(0.001, sigma_y) ([0,1] scale, the reference's ``noise_level_img``; the project's
y = A x + 2·sigma_y·n on [−1,1] is exactly the reference's noise model), ρ_t = λ·σ_n²/σ̄_t².
Grid ("quad"): seq_i = ⌊√(i·T²/(N−1))⌋, last entry − 1, t_i = T−1−seq_i (N = 100: 999, 899, 857, …, 5, 0).
Start: SR (measurement smaller than the image) — x = √ᾱ_{T−1}·bicubic(y) + √(1−ᾱ_{T−1})·z; otherwise y is
read as a diffusion state at t_y = argmin_t |σ̄_t − 2σ_n| and diffused to T−1:
x = √(ᾱ_{T−1}/ᾱ_{t_y})·y + √((1−ᾱ_{T−1}) − (ᾱ_{T−1}/ᾱ_{t_y})(1−ᾱ_{t_y}))·z (z = x_T; colorization repeats y).
Step i (t = t_i, t⁻ = t_{i+1}):
  1. x̂₀ = clip((x − √(1−ᾱ_t)ε)/√ᾱ_t, −1, 1)   (1 NFE);
  2. data step (not at the last step): x̂₀ ← argmin_x ‖y − A x‖² + ρ_t‖x − x̂₀‖² = x̂₀ + Aᵀ(AAᵀ + ρ_t I)⁻¹(y − A x̂₀),
     computed by ``operator.pinv_eta(·, ρ_t)``. For a circular blur this is the reference's
     IFFT[(conj(K̂)FFT(y) + ρ FFT(x̂₀))/(|K̂|² + ρ)], for FFT SR the USRNet/Zhao closed form, for inpainting the
     pixel-wise (m⊙y + ρ x̂₀)/(m + ρ) and for denoising (y + ρ x̂₀)/(1 + ρ). The reference solves blur/SR on the
     [0,1] scale: for operators that keep constants (A·1 = 1) both terms scale by ¼ under x ↦ (x+1)/2, so the
     solution with the same ρ_t is identical on [−1,1];
  3. re-noise (not at the last step): ε̂ = (x − √ᾱ_t x̂₀)/√(1−ᾱ_t);
     x = √ᾱ_{t⁻}·x̂₀ + √(1−ᾱ_{t⁻})·(√(1−ζ)·ε̂ + √ζ·z).
Output: the iterate x at t = 0 (the last step's x̂₀ is computed but unused, as in the reference scripts); for
noiseless inpainting the known pixels are pasted back. NFE = steps; no UNet gradient.
Gaussian-prior benchmark (benchmarks/results/methods_gaussian_cpu.md: 32×32, 4 images, PSNR dB; posterior mean /
baseline in brackets): (clip=False: 14 % of that prior's pixels lie outside [−1, 1]) deblur_gauss σ_y 0.05 21.82
(24.67 / 15.48); sr4 SVD σ_y 0.05 18.55 (21.44 / 20.95); noiseless deblur 32.83 (109.29 / 40.20); sr4 σ_y 0 20.91
(23.60 / 22.18); inpainting 50 % σ_y 0, 20 steps λ 1 ζ 1: 26.24 (30.71 / 12.02).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ddpg.checks import check_sigma_y
from ddpg.errors import ConfigError
from ddpg.operators.base import Operator
from ddpg.schedule import Schedule

from .common import check_eta, lift, predict_x0, prepare, timestep
from .ddpg import NoiseSource


def quad_timesteps(steps: int, num_timesteps: int = 1000) -> list[int]:
    """DiffPIR's "quad" grid, from T−1 down to 0 (``steps`` entries)."""
    if not 2 <= steps <= num_timesteps:
        raise ConfigError(f"DiffPIR needs 2 <= steps <= {num_timesteps}, got {steps}")
    seq = [int(s) for s in np.sqrt(np.linspace(0, num_timesteps**2, steps))]
    seq[-1] -= 1
    return [num_timesteps - 1 - s for s in seq]


def data_step(operator: Operator, x0: torch.Tensor, y: torch.Tensor, rho: float) -> torch.Tensor:
    """argmin_x ‖y − A x‖² + ρ‖x − x̂₀‖² (exact for every operator of the project)."""
    return x0 + operator.pinv_eta(y - operator.A(x0), rho)


def diffpir_start(schedule: Schedule, operator: Operator, y: torch.Tensor, z: torch.Tensor,
                  sigma_n: float) -> torch.Tensor:
    T = schedule.num_timesteps
    a_T = schedule.alpha_bar(T - 1)
    if tuple(y.shape[-2:]) != tuple(operator.img_size):  # SR: bicubic upsampling, diffused from t = 0
        return math.sqrt(a_T) * lift(y, operator.img_size, "bicubic") + math.sqrt(1 - a_T) * z
    ve = np.sqrt(1 - schedule.alphas_cumprod) / np.sqrt(schedule.alphas_cumprod)
    t_y = int(np.argmin(np.abs(ve - 2 * sigma_n)))
    a_y = schedule.alpha_bar(t_y)
    ratio = a_T / a_y
    return math.sqrt(ratio) * lift(y, operator.img_size, "nearest") + math.sqrt(
        max((1 - a_T) - ratio * (1 - a_y), 0.0)) * z


def diffpir_sample(denoiser, operator: Operator, y: torch.Tensor, sigma_y: float, *, steps: int = 100,
                   lam: float = 7.0, zeta: float = 0.3, clip: bool = True, x_T: torch.Tensor | None = None,
                   noise: NoiseSource | None = None, generator: torch.Generator | None = None,
                   callback=None) -> torch.Tensor:
    """Restore (B,3,H,W) float32 images ([-1,1] scale) from ``y`` with DiffPIR (``lam`` = λ, ``zeta`` = ζ;
    ``clip``: clip x̂₀ to [−1, 1] as the reference does)."""
    sigma_n = max(0.001, check_sigma_y(sigma_y))
    zeta = check_eta("zeta", zeta)
    if not lam > 0:
        raise ConfigError(f"lam (DiffPIR's λ) must be > 0, got {lam}")
    schedule, y, x_T, noise = prepare(denoiser, operator, y, x_T, noise, generator)
    ts = quad_timesteps(steps, schedule.num_timesteps)
    x = diffpir_start(schedule, operator, y, x_T, sigma_n)
    for i, t in enumerate(ts):
        a = schedule.alpha_bar(t)
        x0 = predict_x0(x, denoiser(x, timestep(x, t)).float(), a)
        if clip:
            x0 = x0.clamp(-1, 1)
        if i < len(ts) - 1:
            x0 = data_step(operator, x0, y, lam * sigma_n**2 * a / (1 - a))
            a_next = schedule.alpha_bar(ts[i + 1])
            eps_hat = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
            z = noise(x)
            x = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * (math.sqrt(1 - zeta) * eps_hat + math.sqrt(zeta) * z)
        if callback is not None:
            callback(i, x, x0)
    if operator.name == "inpainting" and sigma_y == 0:
        kept = operator.At(torch.ones_like(y))
        x = kept * y + (1 - kept) * x
    return x
