"""DDPG and IDPG (Garber & Tirer, CVPR 2024): DDNM-style sampling with iteratively preconditioned guidance.

Per step (t, t') of the time grid (default "uniform": (990, 980) … (0, −1) for 100 steps) with a = ᾱ_t,
a' = ᾱ_{t'} (docs/methods.md §3.2):
    x̂₀ = (x_t − √(1−a)·ε)/√a,  r = A x̂₀ − y
    x̃  = x̂₀ − s·[s_BP·(1−δ)·Aᵀ(AAᵀ+ηI)⁻¹ r + s_LS·δ·c·Aᵀ r],   δ = a'^γ (0 when σ = 0)
    ε̂  = (x_t − √a·x̃)/√(1−a)
    DDPG: x_{t'} = √a'·x̃ + √(1−a')·(√ζ·z + √(1−ζ)·w·ε̂)     IDPG: x_{t'} = √a'·x̃
with σ = 2·sigma_y, η = max(1e−4, σ²·η̃), w = δ (1 when σ = 0). Output: the last x̃ when σ = 0, else the
last x̂₀ (the unguided estimate at t = 0). One z is drawn per step for both methods, so runs replay.

With ``select_candidates`` (DDPG only, an option beyond the papers) the injected z is picked among N_t
candidates (N_t = ⌊max(n_max·(1 − e^{−SNR_t}), 2)⌋ as DPPS) per image by the smallest

    r_j = ‖√a'·y − A(x_{t'}^{(j)} − √(1−a')·√(1−ζ)·w·ε̂)‖₂ = ‖√a'·(y − A x̃) − √(1−a')·√ζ·A z_j‖₂:

DDPG's deterministic noise part is exactly √(1−a')·√(1−ζ)·w·ε̂, so subtracting it leaves √a'·x̃ + √(1−a')√ζ·z_j
and the selected z best explains the residual y − A x̃ in the measured subspace (DPPS's score, whose DDPM mean
carries √(1−a_{t−1}−σ_t²)·ε̂ ≈ √(1−a_{t−1})·ε̂). N_t extra operator calls per step, no extra NFE; the
candidates are one draw of N_t·3 channels per step (runs replay, a batch equals its single runs); none at the
last step (a' = 1). Measured effect: ``benchmarks/results/methods_gaussian_cpu.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ddpg.checks import check_sigma_y
from ddpg.errors import ConfigError
from ddpg.operators.base import Operator
from ddpg.operators.observation import noise_std
from ddpg.schedule import Schedule, TimeGrid

from .common import NoiseSource, Scalar, coef, eps_from_x0, x0_and_eps
from .dpps import best_candidate, candidate_count, measured_distance
from .method import MethodCapabilities, State, make_params, run_method, skipped


@dataclass(frozen=True)
class DDPGParams:
    """The hyper-parameters of DDPG/IDPG (names as in the paper's code): the one place their defaults live.
    ``inject_noise`` is fixed by the method (ddpg: True, idpg: False)."""

    sigma_y: float = 0.0
    gamma: float = 8.0
    zeta: float = 0.5
    eta_tilde: float = 0.7
    xi: float = 1e-5
    step_size_mode: int = 1
    scale_ls: float = 1.0
    inject_noise: bool = field(default=True, metadata={"fixed": True})
    select_candidates: bool = False
    n_max: int = 50

    def __post_init__(self) -> None:
        for name in ("sigma_y", "gamma", "zeta", "eta_tilde", "xi", "scale_ls"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)}")
        check_sigma_y(self.sigma_y)
        if not 0 <= self.zeta <= 1:
            raise ConfigError(f"zeta must be in [0, 1], got {self.zeta}")
        if isinstance(self.step_size_mode, bool) or self.step_size_mode not in (0, 1, 2):
            raise ConfigError(f"step_size_mode must be 0, 1 or 2, got {self.step_size_mode!r}")
        if self.sigma_y > 0 and not self.gamma > 0:
            raise ConfigError(f"gamma must be > 0, got {self.gamma}")
        if self.scale_ls < 0:
            raise ConfigError(f"scale_ls must be >= 0, got {self.scale_ls}")
        if self.select_candidates and not self.inject_noise:
            raise ConfigError("select_candidates picks DDPG's injected noise: IDPG injects none")
        if isinstance(self.n_max, bool) or not isinstance(self.n_max, int) or self.n_max < 2:
            raise ConfigError(f"n_max must be an integer >= 2, got {self.n_max!r}")

    @property
    def sigma(self) -> float:
        """Noise std on the [-1, 1] scale."""
        return noise_std(self.sigma_y)

    @property
    def eta(self) -> float:
        if self.eta_tilde < 0:  # the reference's obsolete branch
            return 1e-4 + self.xi * (255.0 * self.sigma) ** 2
        return max(1e-4, self.sigma**2 * self.eta_tilde)


@dataclass(frozen=True)
class DDPGRow:
    """One step's scalars: t, a = ᾱ_t, a_next = ᾱ_{t'}, their square roots and √(1−·), the step size s,
    coef_bp = s_BP·(1−δ), coef_ls = s_LS·δ·c and mix_eps = √(1−ζ)·w (floats, or tensors: see ``method``)."""

    t: Scalar
    a: Scalar
    a_next: Scalar
    sqrt_a: Scalar
    sqrt_1m_a: Scalar
    sqrt_a_next: Scalar
    sqrt_1m_a_next: Scalar
    step: Scalar
    coef_bp: Scalar
    coef_ls: Scalar
    mix_eps: Scalar


def ddpg_table(schedule: Schedule, grid: TimeGrid, p: DDPGParams) -> list[DDPGRow]:
    """One :class:`DDPGRow` per step of ``grid`` (float64 arithmetic)."""
    rows = []
    for t, t_next in grid.pairs:
        a, a_next = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
        delta, w = (0.0, 1.0) if p.sigma == 0 else (a_next**p.gamma,) * 2
        ratio = (1 - a_next) / (1 - a)
        s, s_bp, s_ls = {0: (1.0, 1.0, 1.0), 1: (ratio, 1.0, 1.0), 2: (1.0, 1.0, ratio)}[p.step_size_mode]
        rows.append(DDPGRow(float(t), a, a_next, math.sqrt(a), math.sqrt(1 - a), math.sqrt(a_next),
                            math.sqrt(1 - a_next), s, s_bp * (1 - delta), s_ls * delta * p.scale_ls,
                            math.sqrt(1 - p.zeta) * w))
    return rows


def guidance(x0: torch.Tensor, y: torch.Tensor, operator: Operator, row: DDPGRow, p: DDPGParams) -> torch.Tensor:
    """x̃ = x̂₀ − s·[coef_bp·P_η(A x̂₀ − y) + coef_ls·Aᵀ(A x̂₀ − y)] (float32, (B,3,H,W)). A term is left out
    when its weight is the float 0 (and the LS term whenever σ = 0 or c = 0); tensor weights multiply it."""
    r = operator.A(x0) - y
    update = torch.zeros_like(x0)
    if not skipped(row.coef_bp):
        update = update + coef(row.coef_bp, x0) * operator.pinv_eta(r, p.eta)
    if p.sigma > 0 and p.scale_ls > 0 and not skipped(row.coef_ls):
        update = update + coef(row.coef_ls, x0) * operator.At(r)
    return x0 - coef(row.step, x0) * update


class DDPG:
    """DDPG/IDPG as a method (``method`` protocol); ``p.inject_noise`` tells them apart."""

    name = "ddpg"
    params = DDPGParams
    grid = "uniform"

    def capabilities(self, p: DDPGParams) -> MethodCapabilities:
        """With ``select_candidates`` each step draws a count of candidate noises that changes per step."""
        return MethodCapabilities(noise_selection=p.select_candidates)

    def table(self, schedule: Schedule, grid: TimeGrid, p: DDPGParams) -> list[DDPGRow]:
        return ddpg_table(schedule, grid, p)

    def start(self, y: torch.Tensor, operator: Operator, p: DDPGParams, x_T: torch.Tensor, schedule: Schedule,
              rows: list[DDPGRow]) -> State:
        return State(x_T, x_T, x_T)

    def draw(self, noise: NoiseSource, x: torch.Tensor, row: DDPGRow, p: DDPGParams) -> torch.Tensor:
        """z like x; with select_candidates, the step's candidates (B, N_t·3, H, W) (zeros at the last step)."""
        if not p.select_candidates:
            return noise(x)
        if not row.a_next < 1:
            return torch.zeros_like(x)  # a' = 1: the noise is multiplied by 0
        B, C = x.shape[:2]
        return noise(x.new_empty(B, candidate_count(row.a, p.n_max) * C, *x.shape[2:]))

    def step(self, state: State, out: torch.Tensor, row: DDPGRow, z: torch.Tensor, y: torch.Tensor,
             operator: Operator, p: DDPGParams, prediction: str) -> State:
        """One pure step; out = x̃. On the CPU float rows and tensor rows give sample i the same bits (tested);
        on CUDA the last bit may differ (a division by a Python scalar can run as a multiplication)."""
        x = state.x
        x0, _ = x0_and_eps(x, out, row.sqrt_a, row.sqrt_1m_a, prediction)
        x_tilde = guidance(x0, y, operator, row, p)
        if z.shape[1] != x.shape[1]:  # candidates: keep, per image, the one that best explains y − A x̃
            residual = row.sqrt_a_next * (y - operator.A(x_tilde))
            gain = row.sqrt_1m_a_next * math.sqrt(p.zeta)
            z = best_candidate(z, x, lambda zs: measured_distance(operator, residual, gain * zs))
        if p.inject_noise:
            eps_hat = eps_from_x0(x, x_tilde, row.sqrt_a, row.sqrt_1m_a)
            mix = math.sqrt(p.zeta) * z + coef(row.mix_eps, x) * eps_hat
            x_next = coef(row.sqrt_a_next, x) * x_tilde + coef(row.sqrt_1m_a_next, x) * mix
        else:
            x_next = coef(row.sqrt_a_next, x) * x_tilde
        return state.advance(x_next, x0, x_tilde)

    def result(self, state: State, p: DDPGParams) -> torch.Tensor:
        return state.out if p.sigma == 0 else state.x0


def ddpg_sample(denoiser, operator: Operator, y: torch.Tensor, sigma_y: float, *, steps: int = 100,
                x_T: torch.Tensor | None = None, noise: NoiseSource | None = None,
                generator: torch.Generator | None = None, callback=None, **hyper) -> torch.Tensor:
    """DDPG (IDPG with ``inject_noise=False``) through :func:`.method.run_method`: restorations (B,3,H,W)
    float32, [-1, 1] scale, not clamped. ``hyper``: fields of :class:`DDPGParams` (the others keep their
    defaults); ``noise``, ``x_T``, ``generator`` and ``callback(step, x_t, x0)`` as in ``run_method``."""
    p = make_params(DDPGParams, sigma_y, hyper)
    return run_method(DDPG(), p, denoiser, operator, y, steps, x_T, noise, generator, callback)
