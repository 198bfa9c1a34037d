"""DDPG and IDPG (Garber & Tirer, CVPR 2024): DDNM-style sampling with iteratively preconditioned guidance.

Per step (t, t') with a = ᾱ_t, a' = ᾱ_{t'} (algorithms.md §3.2):
    x̂₀ = (x_t − √(1−a)·ε)/√a,  r = A x̂₀ − y
    x̃  = x̂₀ − s·[s_BP·(1−δ)·Aᵀ(AAᵀ+ηI)⁻¹ r + s_LS·δ·c·Aᵀ r],   δ = a'^γ (0 when σ = 0)
    ε̂  = (x_t − √a·x̃)/√(1−a)
    DDPG: x_{t'} = √a'·x̃ + √(1−a')·(√ζ·z + √(1−ζ)·w·ε̂)     IDPG: x_{t'} = √a'·x̃
with σ = 2·sigma_y, η = max(1e−4, σ²·η̃), w = δ (1 when σ = 0). Output: the last x̃ when σ = 0, else the
last x̂₀ (the unguided estimate at t = 0). One z is drawn per step for both methods, so runs replay.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from ddpg.checks import check_sigma_y
from ddpg.errors import ConfigError
from ddpg.operators.base import Operator
from ddpg.schedule import Schedule, linear_schedule, time_pairs

NoiseSource = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GuidanceParams:
    """The hyper-parameters of DDPG/IDPG (names as in the paper's code)."""

    sigma_y: float = 0.0
    gamma: float = 8.0
    zeta: float = 0.5
    eta_tilde: float = 0.7
    xi: float = 1e-5
    step_size_mode: int = 1
    scale_ls: float = 1.0
    inject_noise: bool = True

    def validate(self) -> None:
        for name in ("sigma_y", "gamma", "zeta", "eta_tilde", "xi", "scale_ls"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)}")
        check_sigma_y(self.sigma_y)
        if not 0 <= self.zeta <= 1:
            raise ConfigError(f"zeta must be in [0, 1], got {self.zeta}")
        if self.step_size_mode not in (0, 1, 2):
            raise ConfigError(f"step_size_mode must be 0, 1 or 2, got {self.step_size_mode}")
        if self.sigma_y > 0 and not self.gamma > 0:
            raise ConfigError(f"gamma must be > 0, got {self.gamma}")
        if self.scale_ls < 0:
            raise ConfigError(f"scale_ls must be >= 0, got {self.scale_ls}")

    @property
    def sigma(self) -> float:
        """Noise std on the [-1, 1] scale."""
        return 2.0 * self.sigma_y

    @property
    def eta(self) -> float:
        if self.eta_tilde < 0:  # the reference's obsolete branch
            return 1e-4 + self.xi * (255.0 * self.sigma) ** 2
        return max(1e-4, self.sigma**2 * self.eta_tilde)


def guidance_params(sigma_y: float, **hyper) -> GuidanceParams:
    """Validated :class:`GuidanceParams` from σ_y and hyper-parameters named as its fields (the others keep
    their defaults)."""
    names = {f.name for f in fields(GuidanceParams)} - {"sigma_y"}
    unknown = sorted(set(hyper) - names)
    if unknown:
        raise ConfigError(f"unknown DDPG hyper-parameter(s) {unknown}; known: {sorted(names)}")
    mode = hyper.get("step_size_mode", 1)
    if isinstance(mode, bool) or mode not in (0, 1, 2):
        raise ConfigError(f"step_size_mode must be 0, 1 or 2, got {mode!r}")
    kinds = {"step_size_mode": int, "inject_noise": bool}
    p = GuidanceParams(float(sigma_y), **{k: kinds.get(k, float)(v) for k, v in hyper.items()})
    p.validate()
    return p


Scalar = float | torch.Tensor  # a Python float, or one float64 value per sample shaped (B, 1, 1, 1)


@dataclass(frozen=True)
class StepScalars:
    """Everything a step needs besides tensors: Python floats computed before the loop (one row of the step
    table), or, from :func:`stack_scalars`, per-sample float64 (B, 1, 1, 1) tensors so that samples at
    different steps share one call."""

    t: Scalar
    t_next: Scalar
    a: Scalar
    a_next: Scalar
    delta: Scalar
    w: Scalar
    step: Scalar
    step_bp: Scalar
    step_ls: Scalar


def stack_scalars(rows: list[StepScalars], device: torch.device | str = "cpu") -> StepScalars:
    """One StepScalars whose fields are the rows' values as float64 (B, 1, 1, 1) tensors (row i → sample i)."""
    return StepScalars(*(torch.tensor([float(getattr(r, f.name)) for r in rows], dtype=torch.float64,
                                      device=device).view(-1, 1, 1, 1) for f in fields(StepScalars)))


def _sqrt(v: Scalar) -> Scalar:
    return v.sqrt() if isinstance(v, torch.Tensor) else math.sqrt(v)


def _coef(v: Scalar, like: torch.Tensor) -> Scalar:
    """A scalar ready to multiply ``like``: a float as it is (torch rounds it to like's dtype), a per-sample
    float64 tensor rounded to like's dtype, so both forms enter the product with the same value."""
    return v.to(like.dtype) if isinstance(v, torch.Tensor) else v


def _any(condition: bool | torch.Tensor) -> bool:
    return bool(condition.any()) if isinstance(condition, torch.Tensor) else bool(condition)


def step_scalars(schedule: Schedule, pairs: list[tuple[int, int]], p: GuidanceParams) -> list[StepScalars]:
    out = []
    for t, t_next in pairs:
        a, a_next = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
        delta, w = (0.0, 1.0) if p.sigma == 0 else (a_next**p.gamma,) * 2
        ratio = (1 - a_next) / (1 - a)
        s, s_bp, s_ls = {0: (1.0, 1.0, 1.0), 1: (ratio, 1.0, 1.0), 2: (1.0, 1.0, ratio)}[p.step_size_mode]
        out.append(StepScalars(t, t_next, a, a_next, delta, w, s, s_bp, s_ls))
    return out


def guidance(x0: torch.Tensor, y: torch.Tensor, operator: Operator, k: StepScalars, eta: float,
             scale_ls: float) -> torch.Tensor:
    """x̃ = x̂₀ − s·[s_BP(1−δ)·P_η(A x̂₀ − y) + s_LS·δ·c·Aᵀ(A x̂₀ − y)] (float32, (B,3,H,W)); ``k`` holds
    floats or per-sample tensors (a term is computed when any sample needs it; the others get a zero factor)."""
    r = operator.A(x0) - y
    update = torch.zeros_like(x0)
    if _any(k.delta < 1):
        update = update + _coef(k.step_bp * (1 - k.delta), x0) * operator.pinv_eta(r, eta)
    if _any(k.delta > 0) and scale_ls > 0:
        update = update + _coef(k.step_ls * k.delta * scale_ls, x0) * operator.At(r)
    return x0 - _coef(k.step, x0) * update


def ddpg_step(x: torch.Tensor, eps: torch.Tensor, y: torch.Tensor, operator: Operator, k: StepScalars,
              p: GuidanceParams, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pure DDPG/IDPG step: returns (x_{t'}, x̂₀, x̃). ``k``: one step's floats, or per-sample tensors
    (:func:`stack_scalars`); on the CPU sample i gets the same bits either way (tested); on CUDA the last bit
    may differ (a division by a Python scalar can run as a multiplication by its reciprocal there)."""
    sqrt_a, sqrt_1a = _coef(_sqrt(k.a), x), _coef(_sqrt(1 - k.a), x)
    x0 = (x - sqrt_1a * eps) / sqrt_a
    x_tilde = guidance(x0, y, operator, k, p.eta, p.scale_ls)
    if p.inject_noise:
        eps_hat = (x - sqrt_a * x_tilde) / sqrt_1a
        mix = math.sqrt(p.zeta) * z + _coef(math.sqrt(1 - p.zeta) * k.w, x) * eps_hat
        x_next = _coef(_sqrt(k.a_next), x) * x_tilde + _coef(_sqrt(1 - k.a_next), x) * mix
    else:
        x_next = _coef(_sqrt(k.a_next), x) * x_tilde
    return x_next, x0, x_tilde


def gaussian_noise(generator: torch.Generator | None = None) -> NoiseSource:
    """A noise source drawing N(0, I) like its argument from ``generator``."""
    def draw(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    return draw


def check_measurement(operator: Operator, y: torch.Tensor) -> None:
    """Refuse a measurement that is not a tensor of the operator's measurement shape."""
    if not isinstance(y, torch.Tensor):
        raise ConfigError(f"y must be a torch.Tensor of shape {tuple(operator.meas_shape(1))}, got "
                          f"{type(y).__name__}")
    expected = operator.meas_shape(y.shape[0] if y.ndim == 4 else 1)
    if tuple(y.shape) != tuple(expected):
        raise ConfigError(f"y has shape {tuple(y.shape)} but the {operator.name} operator for "
                          f"{operator.img_size} images measures {tuple(expected)}")


def prepare(denoiser, operator: Operator, y: torch.Tensor, x_T: torch.Tensor | None,
            noise: NoiseSource | None, generator: torch.Generator | None
            ) -> tuple[Schedule, torch.Tensor, torch.Tensor, NoiseSource]:
    """Validate y and return (schedule, y float32, x_T (B,3,H,W) float32 ~ N(0, I), noise source)."""
    check_measurement(operator, y)
    schedule = getattr(denoiser, "schedule", None) or linear_schedule()
    y = y.float()
    shape = (y.shape[0], 3, *operator.img_size)
    if x_T is None:
        x_T = torch.randn(shape, generator=generator, device=y.device)
    elif tuple(x_T.shape) != shape:
        raise ConfigError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
    return schedule, y, x_T.to(y.device, torch.float32), noise or gaussian_noise(generator)


def ddpg_sample(denoiser, operator: Operator, y: torch.Tensor, sigma_y: float, *, steps: int = 100,
                gamma: float = 8.0, zeta: float = 0.5, eta_tilde: float = 0.7, xi: float = 1e-5,
                step_size_mode: int = 1, scale_ls: float = 1.0, inject_noise: bool = True,
                x_T: torch.Tensor | None = None, noise: NoiseSource | None = None,
                generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Restore (B,3,H,W) images (float32, [-1,1] scale, not clamped) from measurements ``y``.

    ``denoiser(x_t, t)`` → ε; ``noise(like)`` supplies z once per step (default: N(0, I) from ``generator``);
    ``x_T`` defaults to N(0, I) from ``generator``; ``callback(step, x_t, x0)`` after every step.
    """
    p = guidance_params(sigma_y, gamma=gamma, zeta=zeta, eta_tilde=eta_tilde, xi=xi,
                        step_size_mode=step_size_mode, scale_ls=scale_ls, inject_noise=inject_noise)
    schedule, y, x, noise = prepare(denoiser, operator, y, x_T, noise, generator)
    scalars = step_scalars(schedule, time_pairs(steps, schedule.num_timesteps), p)
    t_steps = [torch.full((y.shape[0],), float(k.t), device=y.device) for k in scalars]  # (B,) per step
    x0 = x_tilde = x
    for i, k in enumerate(scalars):
        eps = denoiser(x, t_steps[i]).float()
        z = noise(x)
        x, x0, x_tilde = ddpg_step(x, eps, y, operator, k, p, z)
        if callback is not None:
            callback(i, x, x0)
    return x_tilde if p.sigma == 0 else x0
