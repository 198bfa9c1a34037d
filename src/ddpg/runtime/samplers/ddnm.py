"""DDNM and DDNM+ (Wang, Yu, Zhang, ICLR 2023): range/null-space decomposition (docs/methods.md §6.1).

Grid and start as DDPG ("uniform": 100 pairs (990, 980) … (0, −1), x_T ~ N(0, I)); a = ᾱ_t, a' = ᾱ_{t'}, σ = 2·sigma_y.

σ = 0 (DDNM), per step:   x̂₀ = (x_t − √(1−a)ε)/√a;   x̂₀' = x̂₀ − A⁺(A x̂₀ − y);
                           x_{t'} = √a'·x̂₀' + √(1−a')·(η·z + √(1−η²)·ε);   output: the final x (= x̂₀').
σ > 0 (DDNM+), with α = √a', s_t = √(1−a') and the singular values s_i (``Operator.spectral``):
    x̂₀' = x̂₀ − V Λ Vᵀ A⁺(A x̂₀ − y),  λ_i = 1 if s_t ≥ ασ/s_i else s_i·s_t·√(1−η²)/(ασ);
    x_{t'} = α·x̂₀' + V(d₁ ⊙ Vᵀz + d₂ ⊙ Vᵀε) with (d₁, d₂) = (s_t·η, s_t·√(1−η²)) for s_i = 0,
    (√(s_t² − α²σ²/s_i²), 0) for s_t > ασ/s_i and (s_t·η, 0) otherwise.
At the last step (s_t = 0) every λ_i = 0, so the DDNM+ output is the unguided x̂₀ of t = 0 (as DDPG's σ > 0).
DDNM+ needs the singular basis: SVD operators and circular FFT blurs (exact, via the DFT); FFT SR with σ > 0
is refused (use impl="svd"). No UNet gradient; NFE = steps.
With σ > 0, η_b = 1 and the same η, these rules are DDRM's three per-component rules in VP units (λ = 1 ↔ the
"noisier than y" rule, λ < 1 ↔ "less noisy", s_i = 0 ↔ "missing"); only the start differs, which the tests use
as a cross-check.
Measured against a Gaussian prior's exact posterior: ``benchmarks/results/methods_gaussian_cpu.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ddpg.checks import check_sigma_y
from ddpg.operators.base import Operator
from ddpg.operators.observation import noise_std
from ddpg.schedule import Schedule, TimeGrid

from .common import Scalar, check_unit_interval, coef, x0_and_eps
from .method import State, noise_like, plain_steps, spectral_row


@dataclass(frozen=True)
class DDNMParams:
    """DDNM's hyper-parameters: η, the share of fresh noise (the one place its default lives)."""

    sigma_y: float = 0.0
    eta: float = 0.85

    def __post_init__(self) -> None:
        check_sigma_y(self.sigma_y)
        check_unit_interval("eta", self.eta)


@dataclass(frozen=True)
class DDNMRow:
    """One step's scalars: t, √a, √(1−a) (a = ᾱ_t), α = √a', s_t = √(1−a') and, for DDNM+, s_t², s_t·η,
    s_t·√(1−η²) and α·σ."""

    t: Scalar
    sqrt_a: Scalar
    sqrt_1m_a: Scalar
    alpha: Scalar
    s_t: Scalar
    s_t2: Scalar
    s_t_eta: Scalar
    s_t_fresh: Scalar
    alpha_sigma: Scalar


def ddnm_plus_factors(s: torch.Tensor, row: DDNMRow, eta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(λ, d₁, d₂) per singular value s (σ > 0): shaped like s, or (B, …) for a per-sample ``row`` shaped by
    :func:`.method.spectral_row`."""
    measured = s > 0
    thresh = torch.where(measured, s, 1).reciprocal() * row.alpha_sigma  # ασ/s_i (as float / tensor computes it)
    clean_enough = row.s_t >= thresh
    lam = torch.where(clean_enough, 1.0, s * row.s_t * math.sqrt(1 - eta**2) / row.alpha_sigma)
    lam = torch.where(measured, lam, 0.0)
    d1 = torch.where(row.s_t > thresh, (row.s_t2 - thresh**2).clamp_min(0).sqrt(), row.s_t_eta)
    d1 = torch.where(measured, d1, row.s_t_eta)
    d2 = torch.where(measured, torch.zeros_like(s), row.s_t_fresh)
    return lam, d1, d2


class DDNM:
    """DDNM (σ = 0) and DDNM+ (σ > 0) as a method (``method`` protocol); DDNM+ keeps the operator's singular
    basis in the state's ctx."""

    name = "ddnm"
    params = DDNMParams
    capabilities = staticmethod(plain_steps)
    grid = "uniform"
    draw = staticmethod(noise_like)

    def table(self, schedule: Schedule, grid: TimeGrid, p: DDNMParams) -> list[DDNMRow]:
        rows = []
        for t, t_next in grid.pairs:
            a, a_next = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
            alpha, s_t = math.sqrt(a_next), math.sqrt(1 - a_next)
            rows.append(DDNMRow(float(t), math.sqrt(a), math.sqrt(1 - a), alpha, s_t, s_t**2, s_t * p.eta,
                                s_t * math.sqrt(1 - p.eta**2), alpha * noise_std(p.sigma_y)))
        return rows

    def start(self, y: torch.Tensor, operator: Operator, p: DDNMParams, x_T: torch.Tensor, schedule: Schedule,
              rows: list[DDNMRow]) -> State:
        basis = operator.spectral(y.device, "DDNM+ (sigma_y > 0)") if p.sigma_y > 0 else None
        return State(x_T, x_T, x_T, basis)

    def step(self, state: State, out: torch.Tensor, row: DDNMRow, z: torch.Tensor, y: torch.Tensor,
             operator: Operator, p: DDNMParams, prediction: str) -> State:
        x, basis = state.x, state.ctx
        x0, eps = x0_and_eps(x, out, row.sqrt_a, row.sqrt_1m_a, prediction)
        correction = operator.pinv(operator.A(x0) - y)
        if basis is None:
            x0_c = x0 - correction
            x = coef(row.alpha, x) * x0_c + coef(row.s_t, x) * (p.eta * z + math.sqrt(1 - p.eta**2) * eps)
        else:
            c = basis.coef(correction)
            lam, d1, d2 = ddnm_plus_factors(basis.s, spectral_row(row, c), p.eta)
            x0_c = x0 - basis.image(lam * c)
            x = coef(row.alpha, x) * x0_c + basis.image(d1 * basis.coef(z) + d2 * basis.coef(eps))
        return state.advance(x, x0, x)

    def result(self, state: State, p: DDNMParams) -> torch.Tensor:
        return state.out
