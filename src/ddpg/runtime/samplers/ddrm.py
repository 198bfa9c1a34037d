"""DDRM (Kawar, Elad, Ermon, Song, NeurIPS 2022): denoising diffusion restoration in the singular basis
(docs/methods.md §6.2).

Variance-exploding units σ_t = √(1−ᾱ_t)/√ᾱ_t; σ = 2·sigma_y; coefficients in the operator's singular basis
(``Operator.spectral``): x̂ = Vᵀx̂₀, e = Vᵀε, Uᵀy, ȳ_i = (Uᵀy)_i/s_i. Grid ("uniform"): skip = T//steps, pairs
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
Measured against a Gaussian prior's exact posterior: ``benchmarks/results/methods_gaussian_cpu.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ddpg.checks import check_sigma_y
from ddpg.operators.base import Operator, SpectralBasis
from ddpg.operators.observation import noise_std
from ddpg.schedule import Schedule, TimeGrid

from .common import Scalar, check_unit_interval, coef, x0_and_eps
from .method import State, noise_like, plain_steps, spectral_row


@dataclass(frozen=True)
class DDRMParams:
    """DDRM's hyper-parameters: η (η_A = η_C) and η_b (the one place their defaults live)."""

    sigma_y: float = 0.0
    eta: float = 0.85
    eta_b: float = 1.0

    def __post_init__(self) -> None:
        check_sigma_y(self.sigma_y)
        check_unit_interval("eta", self.eta)
        check_unit_interval("eta_b", self.eta_b)


@dataclass(frozen=True)
class DDRMRow:
    """One step's scalars: t, √a, √(1−a) (a = ᾱ_t), √a', σ' = σ_{t'} (VE), σ'², σ'·√(1−η²) and σ'·η."""

    t: Scalar
    sqrt_a: Scalar
    sqrt_1m_a: Scalar
    sqrt_a_next: Scalar
    sigma_next: Scalar
    sigma_next2: Scalar
    sigma_next_fresh: Scalar
    sigma_next_eta: Scalar


def ve_sigma(a: float) -> float:
    return math.sqrt(1 - a) / math.sqrt(a)


def measured_coefs(basis: SpectralBasis, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Uᵀy, ȳ = Uᵀy/s with 0 where s = 0), each (B, …) in the coefficient layout."""
    y_coef = basis.meas_coef(y)
    return y_coef, torch.where(basis.s > 0, y_coef / torch.where(basis.s > 0, basis.s, 1), 0)


def ddrm_start(basis: SpectralBasis, y_bar: torch.Tensor, z: torch.Tensor, sigma_T: float,
               sigma: float) -> torch.Tensor:
    """x_T = V(c)/σ_T with c the start rule above (z: coefficients of N(0, I) noise)."""
    s = basis.s
    informative = s * sigma_T > sigma
    spread = (sigma_T**2 - sigma**2 / torch.where(informative, s, 1) ** 2).clamp_min(0).sqrt()
    c = torch.where(informative, y_bar + spread * z, sigma_T * z)
    return basis.image(c) / sigma_T


def ddrm_coefficients(basis: SpectralBasis, y: torch.Tensor, x0_c: torch.Tensor, eps_c: torch.Tensor,
                      z: torch.Tensor, row: DDRMRow, p: DDRMParams) -> torch.Tensor:
    """The coefficients c of x_{t'}/√ᾱ_{t'} by the three rules above (``row`` per sample or for the batch)."""
    s, sigma = basis.s, noise_std(p.sigma_y)
    y_coef, y_bar = measured_coefs(basis, y)
    row = spectral_row(row, x0_c)
    safe_s = torch.where(s > 0, s, 1)
    sn = s * row.sigma_next
    missing = (s == 0) | (sn == sigma)
    less_noisy = ~missing & (sn < sigma)
    c_missing = x0_c + row.sigma_next_fresh * eps_c + row.sigma_next_eta * z
    if sigma > 0:
        c_less = (x0_c + row.sigma_next_fresh * (y_coef - s * x0_c) / sigma + row.sigma_next_eta * z)
    else:
        c_less = c_missing  # never selected: s·σ' < 0 is impossible
    spread = (row.sigma_next2 - sigma**2 * p.eta_b**2 / safe_s**2).clamp_min(0).sqrt()
    c_noisier = p.eta_b * y_bar + (1 - p.eta_b) * x0_c + spread * z
    return torch.where(missing, c_missing, torch.where(less_noisy, c_less, c_noisier))


class DDRM:
    """DDRM as a method (``method`` protocol): the step noise is Vᵀ of ``noise(x)``, one draw per step."""

    name = "ddrm"
    params = DDRMParams
    capabilities = staticmethod(plain_steps)
    grid = "uniform"
    draw = staticmethod(noise_like)

    def table(self, schedule: Schedule, grid: TimeGrid, p: DDRMParams) -> list[DDRMRow]:
        rows = []
        for t, t_next in grid.pairs:
            a, a_next = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
            sn = ve_sigma(a_next)
            rows.append(DDRMRow(float(t), math.sqrt(a), math.sqrt(1 - a), math.sqrt(a_next), sn, sn**2,
                                sn * math.sqrt(1 - p.eta**2), sn * p.eta))
        return rows

    def start(self, y: torch.Tensor, operator: Operator, p: DDRMParams, x_T: torch.Tensor, schedule: Schedule,
              rows: list[DDRMRow]) -> State:
        """x_T by the start rule (σ_T at the first step's t), from the coefficients Vᵀx_T of the given x_T."""
        basis = operator.spectral(y.device, "DDRM")
        y_bar = measured_coefs(basis, y)[1]
        x = ddrm_start(basis, y_bar, basis.coef(x_T), rows[0].sqrt_1m_a / rows[0].sqrt_a, noise_std(p.sigma_y))
        return State(x, x, x, basis)

    def step(self, state: State, out: torch.Tensor, row: DDRMRow, z: torch.Tensor, y: torch.Tensor,
             operator: Operator, p: DDRMParams, prediction: str) -> State:
        x, basis = state.x, state.ctx
        x0, eps = x0_and_eps(x, out, row.sqrt_a, row.sqrt_1m_a, prediction)
        c = ddrm_coefficients(basis, y, basis.coef(x0), basis.coef(eps), basis.coef(z), row, p)
        x = coef(row.sqrt_a_next, x) * basis.image(c)
        return state.advance(x, x0, x)

    def result(self, state: State, p: DDRMParams) -> torch.Tensor:
        return state.out
