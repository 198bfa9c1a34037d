"""DDPG with DPPS-style candidate selection of the injected noise (an option beyond the papers).

DDPG re-noises x_{t'} = √a'·x̃ + √(1−a')·(√ζ·z + √(1−ζ)·w·ε̂) (algorithms.md §3.2). With
``select_candidates`` it draws N_t candidates z_j (N_t = ⌊max(n_max·(1 − e^{−SNR_t}), 2)⌋ as DPPS, SNR_t at the
step's t) and keeps, per image, the one minimising

    r_j = ‖√a'·y − A(x_{t'}^{(j)} − √(1−a')·√(1−ζ)·w·ε̂)‖₂ = ‖√a'·(y − A x̃) − √(1−a')·√ζ·A z_j‖₂.

Derivation: DPPS scores a candidate by removing the deterministic part of its noise (√(1−a_{t−1})·ε̂; the
DDPM mean carries √(1−a_{t−1}−σ_t²)·ε̂ ≈ that, since σ_t² ≪ 1−a_{t−1} over most of the trajectory) and comparing
what remains, √a·x̂₀ + σ_t z_j, with √a·y through A. DDPG's deterministic noise part is exactly
√(1−a')·√(1−ζ)·w·ε̂, so subtracting it leaves √a'·x̃ + √(1−a')√ζ·z_j; the selected z best explains the residual
y − A x̃ in the measured subspace (when A x̃ = y, σ = 0, it is the candidate with the least energy there).
Forward-only: N_t extra operator calls per step, no extra NFE. The candidates come from ``noise`` (one draw of
N_t·3 channels per step), so runs replay and a batch equals its single runs. No candidates are drawn at the
last step (a' = 1: no noise).
Measured (benchmarks/results/methods_gaussian_cpu.md, Gaussian prior, 32×32, 16 images, DDPG's gaussian presets):
mean PSNR gain +0.08 ± 0.05 dB (deblur_gauss σ_y 0.05, 13/16 images improved), +0.16 ± 0.07 dB (sr4 SVD σ_y 0.05,
11/16), +0.08 ± 0.09 dB (noiseless deblur, 8/16), +0.00 ± 0.08 dB (noiseless sr4, 8/16) — a small gain with noisy
measurements, none without noise, for 3–4× the CPU time of plain DDPG on this cheap prior (the candidates'
operator calls; with a real UNet the relative cost is small). Off by default.
"""

from __future__ import annotations

import math

import torch

from ddpg.operators.base import Operator
from ddpg.schedule import time_pairs

from .common import prepare, timestep
from .ddpg import GuidanceParams, NoiseSource, ddpg_sample, ddpg_step, guidance, step_scalars
from .dpps import candidate_count, measured_distance, select_noise


def ddpg_sample_with_options(denoiser, operator: Operator, y: torch.Tensor, sigma_y: float, *,
                             select_candidates: bool = False, n_max: int = 50, **kwargs) -> torch.Tensor:
    """``ddpg_sample`` (DDPG, noise injection on), or with ``select_candidates`` the selection above."""
    if not select_candidates:
        return ddpg_sample(denoiser, operator, y, sigma_y, inject_noise=True, **kwargs)
    return ddpg_select_sample(denoiser, operator, y, sigma_y, n_max=n_max, **kwargs)


def ddpg_select_sample(denoiser, operator: Operator, y: torch.Tensor, sigma_y: float, *, steps: int = 100,
                       gamma: float = 8.0, zeta: float = 0.5, eta_tilde: float = 0.7, xi: float = 1e-5,
                       step_size_mode: int = 1, scale_ls: float = 1.0, n_max: int = 50,
                       x_T: torch.Tensor | None = None, noise: NoiseSource | None = None,
                       generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """DDPG with candidate selection; returns (B,3,H,W) float32 ([-1,1] scale, not clamped)."""
    p = GuidanceParams(float(sigma_y), float(gamma), float(zeta), float(eta_tilde), float(xi),
                       int(step_size_mode), float(scale_ls), True)
    p.validate()
    schedule, y, x, noise = prepare(denoiser, operator, y, x_T, noise, generator)
    scalars = step_scalars(schedule, time_pairs(steps, schedule.num_timesteps), p)
    x0 = x_tilde = x
    for i, k in enumerate(scalars):
        eps = denoiser(x, timestep(x, k.t)).float()
        if k.a_next < 1:
            x0 = (x - math.sqrt(1 - k.a) * eps) / math.sqrt(k.a)
            x_tilde = guidance(x0, y, operator, k, p.eta, p.scale_ls)
            residual = math.sqrt(k.a_next) * (y - operator.A(x_tilde))
            gain = math.sqrt(1 - k.a_next) * math.sqrt(p.zeta)

            def score(zs, residual=residual, gain=gain):
                return measured_distance(operator, residual, gain * zs)

            z = select_noise(noise, x, candidate_count(k.a, int(n_max)), score)
        else:
            z = torch.zeros_like(x)  # a' = 1: the noise is multiplied by 0
        x, x0, x_tilde = ddpg_step(x, eps, y, operator, k, p, z)
        if callback is not None:
            callback(i, x, x0)
    return x_tilde if p.sigma == 0 else x0
