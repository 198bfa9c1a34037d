"""DPPS (Wu et al., ACM MM 2024): DPS plus measurement-guided selection of the sampling noise
(docs/methods.md §6.5).

Start ("aligned"): x_T = √ᾱ_T·ŷ + √(1−ᾱ_T)·z, ŷ = y for same-size tasks, nearest upsampling for SR (a single
measured channel is repeated). Step t → t_prev (the DPS grid and variance of :mod:`.dps`, one UNet call):
  1. m = μ_θ(x_t) − ζ·∂‖y − A x̂₀‖/∂x_t (the DPS step applied to the mean);
  2. N_t candidates c_j = m + σ_t·z_j,  N_t = ⌊max(n_max·(1 − e^{−SNR_t}), 2)⌋, SNR_t = ᾱ_t/(1−ᾱ_t);
  3. scores r_j = ‖√ᾱ_{t_prev}·y − A(c_j − √(1−ᾱ_{t_prev})·ε̂)‖₂ with ε̂ the model's ε (A linear: the part
     without z_j is computed once, A(σ_t z_j) batched over j);
  4. x_{t_prev} = m + σ_t·z_{argmin_j r_j} per image; no noise (and no candidates) at the last step.
Candidates cost N_t operator calls and no NFE. ζ: 0.4 deblurring, 1.0 SR×4 and inpainting; the paper's
σ = 0.01 on [−1,1] is sigma_y = 0.005 in the project's y = A x + 2·sigma_y·n (presets ``…/0.005``).
Needs ∂/∂x_t through the UNet: torch backend only.
Measured against a Gaussian prior's exact posterior: ``benchmarks/results/methods_gaussian_cpu.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from ddpg.errors import ConfigError
from ddpg.operators.base import Operator

from .common import NoiseSource, lift, prepare
from .dps import (
    DPSParams,
    ancestral_steps,
    check_grad_backend,
    log_variance,
    norm_and_grad,
    posterior_mean,
    std_of,
)


def candidate_count(a: float, n_max: int) -> int:
    """N_t = ⌊max(n_max·(1 − e^{−SNR_t}), 2)⌋ with SNR_t = a/(1−a)."""
    return int(math.floor(max(n_max * (1 - math.exp(-a / (1 - a))), 2)))


def best_candidate(zs: torch.Tensor, like: torch.Tensor, score) -> torch.Tensor:
    """Per image, the candidate with the smallest ``score(z: (N, B, C, H, W)) -> (N, B)`` among ``zs``
    (B, N·C, H, W), one draw per image so each image's stream supplies its own candidates; returns (B,C,H,W)."""
    B, C = like.shape[:2]
    zs = zs.view(B, -1, C, *like.shape[2:]).transpose(0, 1)
    best = score(zs).argmin(dim=0)
    return zs[best, torch.arange(B, device=like.device)]


def select_noise(noise: NoiseSource, like: torch.Tensor, count: int, score) -> torch.Tensor:
    """Draw ``count`` noises like ``like`` (B,C,H,W) in one draw of shape (B, count·C, H, W) and return
    :func:`best_candidate` of them."""
    B, C = like.shape[:2]
    return best_candidate(noise(like.new_empty(B, count * C, *like.shape[2:])), like, score)


def measured_distance(operator: Operator, residual: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """‖residual_b − A(offset_{j,b})‖₂ for offsets (N, B, C, H, W) → (N, B); A is applied to all N·B at once."""
    N, B = offsets.shape[:2]
    measured = operator.A(offsets.flatten(0, 1)).view(N, B, *residual.shape[1:])
    return (residual.unsqueeze(0) - measured).flatten(2).norm(dim=2)


@dataclass(frozen=True)
class DPPSParams(DPSParams):
    """DPPS's hyper-parameters: those of DPS (ζ defaults to 1) and n_max, the most noise candidates."""

    label: ClassVar[str] = "DPPS"
    zeta: float = 1.0
    n_max: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.n_max, bool) or not isinstance(self.n_max, int) or self.n_max < 2:
            raise ConfigError(f"n_max must be an integer >= 2, got {self.n_max!r}")


def dpps_sample(denoiser, operator: Operator, y: torch.Tensor, p: DPPSParams, *, steps: int = 1000,
                x_T: torch.Tensor | None = None, noise: NoiseSource | None = None,
                generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Restore (B,3,H,W) float32 images ([-1,1] scale) from ``y`` with DPPS."""
    check_grad_backend(denoiser, "DPPS")
    zeta, n_max, var_type, clip = p.zeta, p.n_max, p.var_type, p.clip
    schedule, y, x_T, noise = prepare(denoiser, operator, y, x_T, noise, generator)
    plan, prediction = ancestral_steps(schedule, steps), denoiser.prediction
    a_T = plan[0].a
    x = math.sqrt(a_T) * lift(y, operator.img_size, "nearest") + math.sqrt(1 - a_T) * x_T
    for i, k in enumerate(plan):
        grad, out, x0, eps, _ = norm_and_grad(denoiser.model_output, operator, y, x, k.t, k.a, prediction, clip)
        m = posterior_mean(k, x0, x) - zeta * grad
        if i < len(plan) - 1:
            std = std_of(log_variance(out, k, var_type))
            # r_j = ‖√a_p·y − A(m − √(1−a_p)·ε̂) − A(σ_t z_j)‖ (A is linear)
            residual = math.sqrt(k.a_prev) * y - operator.A(m - math.sqrt(1 - k.a_prev) * eps)

            def score(zs, residual=residual, std=std):
                return measured_distance(operator, residual, std * zs)

            m = m + std * select_noise(noise, x, candidate_count(k.a, int(n_max)), score)
        x = m
        if callback is not None:
            callback(i, x, x0)
    return x
