"""DiffPIR (Zhu et al., CVPR-W NTIRE 2023): plug-and-play diffusion with a closed-form data step
(docs/methods.md §6.3).

σ̄_t = √(1−ᾱ_t)/√ᾱ_t, σ_n = max(0.001, sigma_y) ([0,1] scale, the reference's ``noise_level_img``; the project's
y = A x + 2·sigma_y·n on [−1,1] is exactly the reference's noise model), ρ_t = λ·σ_n²/σ̄_t².
Grid ("quad", :func:`ddpg.schedule.quad_timesteps`): seq_i = ⌊√(i·T²/(N−1))⌋, last entry − 1, t_i = T−1−seq_i
(N = 100: 999, 899, 857, …, 5, 0). Start at the grid's first t₀ (T−1 on this grid): SR (measurement smaller
than the image) — x = √ᾱ_{t₀}·bicubic(y) + √(1−ᾱ_{t₀})·z; otherwise y is read as a diffusion state at
t_y = argmin_t |σ̄_t − 2σ_n| and diffused to t₀:
x = √(ᾱ_{t₀}/ᾱ_{t_y})·y + √((1−ᾱ_{t₀}) − (ᾱ_{t₀}/ᾱ_{t_y})(1−ᾱ_{t_y}))·z (z = x_T; colorization repeats y).
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
Measured against a Gaussian prior's exact posterior: ``benchmarks/results/methods_gaussian_cpu.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ddpg.checks import check_sigma_y
from ddpg.errors import ConfigError
from ddpg.operators.base import Operator
from ddpg.operators.observation import noise_std
from ddpg.schedule import Schedule, TimeGrid

from .common import NoiseSource, Scalar, check_unit_interval, coef, eps_from_x0, lift, x0_and_eps
from .method import State, noise_like, plain_steps, skipped


def data_step(operator: Operator, x0: torch.Tensor, y: torch.Tensor, rho: Scalar, weight: Scalar = 1.0
              ) -> torch.Tensor:
    """argmin_x ‖y − A x‖² + ρ‖x − x̂₀‖² (exact for every operator of the project), (B,3,H,W); ``weight``
    scales the correction (1: the step; a tensor row's ``go``: 0 at the last step). ρ enters as a tensor in x0's
    dtype, a Python float too, so an operator that adds it to a constant (the masks' 1 + ρ) rounds the same for
    the eager loop's float rows and the graph runner's tensor rows (0-d or per sample (B, 1, 1, 1))."""
    rho = rho if isinstance(rho, torch.Tensor) else torch.as_tensor(rho, dtype=x0.dtype, device=x0.device)
    return x0 + coef(weight, x0) * operator.pinv_eta(y - operator.A(x0), coef(rho, x0))


def diffpir_start(schedule: Schedule, operator: Operator, y: torch.Tensor, z: torch.Tensor, sigma_n: float,
                  t_start: int) -> torch.Tensor:
    """x at the grid's first timestep ``t_start`` by the start rule above, (B,3,H,W) (z: N(0, I) like it)."""
    a_start = schedule.alpha_bar(t_start)
    if tuple(y.shape[-2:]) != tuple(operator.img_size):  # SR: bicubic upsampling, diffused from t = 0
        return math.sqrt(a_start) * lift(y, operator.img_size, "bicubic") + math.sqrt(1 - a_start) * z
    ve = np.sqrt(1 - schedule.alphas_cumprod) / np.sqrt(schedule.alphas_cumprod)
    t_y = int(np.argmin(np.abs(ve - noise_std(sigma_n))))
    a_y = schedule.alpha_bar(t_y)
    ratio = a_start / a_y
    return math.sqrt(ratio) * lift(y, operator.img_size, "nearest") + math.sqrt(
        max((1 - a_start) - ratio * (1 - a_y), 0.0)) * z


@dataclass(frozen=True)
class DiffPIRParams:
    """DiffPIR's hyper-parameters: λ (``lam``), ζ (``zeta``) and ``clip`` (clip x̂₀ to [−1, 1] as the
    reference does); the one place their defaults live."""

    sigma_y: float = 0.0
    lam: float = 7.0
    zeta: float = 0.3
    clip: bool = True

    def __post_init__(self) -> None:
        check_sigma_y(self.sigma_y)
        check_unit_interval("zeta", self.zeta)
        if not self.lam > 0:
            raise ConfigError(f"lam (DiffPIR's λ) must be > 0, got {self.lam}")

    @property
    def sigma_n(self) -> float:
        """σ_n = max(0.001, sigma_y), the reference's noise level ([0, 1] scale)."""
        return max(0.001, self.sigma_y)


@dataclass(frozen=True)
class DiffPIRRow:
    """One step's scalars: t, √a, √(1−a) (a = ᾱ_t), ρ_t, √ᾱ_{t⁻}, √(1−ᾱ_{t⁻}), and ``go`` (1 before the
    last step: data step and re-noising; 0 at the last step, where a' and ρ are placeholders)."""

    t: Scalar
    sqrt_a: Scalar
    sqrt_1m_a: Scalar
    rho: Scalar
    sqrt_a_next: Scalar
    sqrt_1m_a_next: Scalar
    go: Scalar


class DiffPIR:
    """DiffPIR as a method (``method`` protocol)."""

    name = "diffpir"
    params = DiffPIRParams
    capabilities = staticmethod(plain_steps)
    grid = "quad"

    def draw(self, noise: NoiseSource, x: torch.Tensor, row: DiffPIRRow, p: DiffPIRParams) -> torch.Tensor:
        """z like x; none drawn at the last step of an eager run (go = 0.0: no re-noising)."""
        return torch.zeros_like(x) if skipped(row.go) else noise_like(noise, x, row, p)

    def table(self, schedule: Schedule, grid: TimeGrid, p: DiffPIRParams) -> list[DiffPIRRow]:
        rows = []
        for t, t_next in grid.pairs:
            a, a_next = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
            last = t_next == -1
            rows.append(DiffPIRRow(float(t), math.sqrt(a), math.sqrt(1 - a), p.lam * p.sigma_n**2 * a / (1 - a),
                                   math.sqrt(a_next), math.sqrt(1 - a_next), 0.0 if last else 1.0))
        return rows

    def start(self, y: torch.Tensor, operator: Operator, p: DiffPIRParams, x_T: torch.Tensor, schedule: Schedule,
              rows: list[DiffPIRRow]) -> State:
        x = diffpir_start(schedule, operator, y, x_T, p.sigma_n, int(rows[0].t))
        return State(x, x, x, (operator, y))

    def step(self, state: State, out: torch.Tensor, row: DiffPIRRow, z: torch.Tensor, y: torch.Tensor,
             operator: Operator, p: DiffPIRParams, prediction: str) -> State:
        """Steps 1–3 above; at the last step (go = 0) x stays: skipped for the float 0, blended by weight
        (go·x_{t⁻} + (1 − go)·x) for tensor rows."""
        x = state.x
        x0, _ = x0_and_eps(x, out, row.sqrt_a, row.sqrt_1m_a, prediction)
        if p.clip:
            x0 = x0.clamp(-1, 1)
        if skipped(row.go):
            return state.advance(x, x0, x)
        x0 = data_step(operator, x0, y, row.rho, row.go)
        eps_hat = eps_from_x0(x, x0, row.sqrt_a, row.sqrt_1m_a)
        x_next = coef(row.sqrt_a_next, x) * x0 + coef(row.sqrt_1m_a_next, x) * (
            math.sqrt(1 - p.zeta) * eps_hat + math.sqrt(p.zeta) * z)
        if isinstance(row.go, torch.Tensor):
            x_next = coef(row.go, x) * x_next + coef(1 - row.go, x) * x
        return state.advance(x_next, x0, x_next)

    def result(self, state: State, p: DiffPIRParams) -> torch.Tensor:
        """The last x; for a noiseless y with what it fixes exactly pasted back (``Operator.paste_known``: the
        known pixels of inpainting)."""
        operator, y = state.ctx
        return operator.paste_known(state.out, y) if p.sigma_y == 0 else state.out
