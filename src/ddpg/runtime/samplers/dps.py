"""DPS (Chung et al., ICLR 2023): diffusion posterior sampling by the gradient of ‖y − A x̂₀(x_t)‖ through the
UNet (docs/methods.md §6.4).

Ancestral (DDPM) sampling over ``steps`` timesteps (1000 = the paper; fewer are respaced as guided-diffusion
does: t_i = round(i·(T−1)/(steps−1)), β_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}}; the UNet always sees the original t_i).
Step t → t_prev with a = ᾱ_t, a_p = ᾱ_{t_prev} (1 after the last), β = 1 − a/a_p:
    (ε, v) = UNet(x_t, t);  x̂₀ = clip((x_t − √(1−a)ε)/√a, −1, 1)  (an x̂₀- or v-prior: its x̂₀, clipped)
    μ = β√a_p/(1−a)·x̂₀ + (1−a_p)√(1−β)/(1−a)·x_t;   x' = μ + exp(½ log σ²)·z   (no noise at the last step)
    r = Σ_images ‖y − A(x̂₀)‖₂ (not squared);   x_{t_prev} = x' − ζ·∂r/∂x_t.
The reference takes one norm over the whole batch; summing per-image norms gives each image the gradient of
its own norm, so a batch equals the single runs (identical for batch 1).
Variance (``var_type``): "learned_range" (log σ² = f·log β + (1−f)·log β̃, f = (v+1)/2) — the paper's, chosen by
"auto" when the prior outputs 6 channels; "fixed_small" (β̃ = (1−a_p)/(1−a)·β, the DDPM posterior variance) —
"auto" for 3-channel priors (DDPM UNets, the Gaussian prior); "fixed_large" (β). β̃ of the first timestep is
replaced by the next one's (guided-diffusion's clipped log variance).
σ convention: the papers add σ on [−1,1] (DPS: 0.05). The project's measurement is y = A x + 2·sigma_y·n,
so the paper's setting is sigma_y = σ/2 (presets ``…/0.025``); the sampler itself never uses the noise level.
Needs ∂/∂x_t through the UNet: torch backend only (``denoiser.capabilities.grad``); NFE = steps forward + steps
backward passes.
Measured against a Gaussian prior's exact posterior: ``benchmarks/results/methods_gaussian_cpu.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from ddpg.checks import check_sigma_y
from ddpg.errors import ConfigError
from ddpg.operators.base import Operator
from ddpg.schedule import Schedule

from .common import NoiseSource, prepare, timestep, x0_and_eps

VAR_TYPES = ("auto", "learned_range", "fixed_small", "fixed_large")


@dataclass(frozen=True)
class AncestralStep:
    """Scalars of one DDPM step t → t_prev on a (possibly respaced) grid."""

    t: int
    a: float
    a_prev: float
    beta: float
    coef_x0: float
    coef_xt: float
    log_var_small: float  # log β̃ (clipped at the first step)
    log_var_large: float  # log β (β̃ at the first step, as guided-diffusion's fixed_large)


def check_var_type(var_type: str) -> None:
    if var_type not in VAR_TYPES:
        raise ConfigError(f"var_type must be one of {', '.join(VAR_TYPES)}, got {var_type!r}")


def respaced_timesteps(steps: int, num_timesteps: int) -> list[int]:
    """guided-diffusion ``space_timesteps(T, [steps])``: round(i·(T−1)/(steps−1)), ascending."""
    if not 1 <= steps <= num_timesteps:
        raise ConfigError(f"steps must be in [1, {num_timesteps}], got {steps}")
    if steps == 1:
        return [0]
    stride = (num_timesteps - 1) / (steps - 1)
    return [round(i * stride) for i in range(steps)]


def ancestral_steps(schedule: Schedule, steps: int) -> list[AncestralStep]:
    """The DDPM steps in sampling order (t descending)."""
    ts = respaced_timesteps(steps, schedule.num_timesteps)
    a_seq = [schedule.alpha_bar(t) for t in ts]
    a_prev_seq = [1.0] + a_seq[:-1]
    betas = [1 - a / ap for a, ap in zip(a_seq, a_prev_seq, strict=True)]
    tilde = [(1 - ap) / (1 - a) * b for a, ap, b in zip(a_seq, a_prev_seq, betas, strict=True)]
    tilde_clipped = [tilde[1] if len(tilde) > 1 else betas[0]] + tilde[1:]
    large = [tilde_clipped[0]] + betas[1:]
    out = [AncestralStep(t, a, ap, b, b * math.sqrt(ap) / (1 - a), (1 - ap) * math.sqrt(1 - b) / (1 - a),
                         math.log(small), math.log(big))
           for t, a, ap, b, small, big in zip(ts, a_seq, a_prev_seq, betas, tilde_clipped, large, strict=True)]
    return out[::-1]


def check_grad_backend(denoiser, method: str) -> None:
    """Refuse denoisers that cannot be differentiated (ONNX Runtime, TensorRT) and inference mode."""
    if not denoiser.capabilities.grad:
        raise ConfigError(f"{method} differentiates through the UNet and runs on the torch backend only, not on "
                          f"{denoiser.backend}")
    if torch.is_inference_mode_enabled():
        raise ConfigError(f"{method} needs autograd: call it outside torch.inference_mode()")


def norm_and_grad(model_output: Callable, operator: Operator, y: torch.Tensor, x_t: torch.Tensor, t: int,
                  a: float, prediction: str, clip: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(∂r/∂x_t, model output, x̂₀, ε, r per image) with r_b = ‖y_b − A(x̂₀(x_t)_b)‖₂ — one forward and one
    backward pass through ``model_output(x, t_vec)`` (whose first 3 channels are what ``prediction`` says);
    works in the dtype of ``x_t``."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        out = model_output(x, timestep(x, t).to(x.dtype))
        x0, eps = x0_and_eps(x, out[:, :3], math.sqrt(a), math.sqrt(1 - a), prediction)
        if clip:
            x0 = x0.clamp(-1, 1)
        r = (y - operator.A(x0)).flatten(1).norm(dim=1)
        (grad,) = torch.autograd.grad(r.sum(), x)
    return grad, out.detach(), x0.detach(), eps.detach(), r.detach()


def log_variance(out: torch.Tensor, k: AncestralStep, var_type: str) -> torch.Tensor | float:
    """log σ² of the reverse step: a tensor (B,3,H,W) for learned_range, else a float."""
    if var_type == "auto":
        var_type = "learned_range" if out.shape[1] == 6 else "fixed_small"
    if var_type == "learned_range":
        if out.shape[1] != 6:
            raise ConfigError(f"var_type 'learned_range' needs a prior with 6 output channels, got {out.shape[1]}")
        frac = (out[:, 3:6] + 1) / 2
        return frac * math.log(k.beta) + (1 - frac) * k.log_var_small
    check_var_type(var_type)
    return k.log_var_small if var_type == "fixed_small" else k.log_var_large


def posterior_mean(k: AncestralStep, x0: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
    return k.coef_x0 * x0 + k.coef_xt * x_t


def std_of(log_var: torch.Tensor | float) -> torch.Tensor | float:
    return torch.exp(0.5 * log_var) if isinstance(log_var, torch.Tensor) else math.exp(0.5 * log_var)


@dataclass(frozen=True)
class DPSParams:
    """DPS's hyper-parameters: ζ (step scale), the reverse variance ``var_type`` and ``clip`` of x̂₀."""

    label: ClassVar[str] = "DPS"
    sigma_y: float = 0.0
    zeta: float = 0.3
    var_type: str = "auto"
    clip: bool = True

    def __post_init__(self) -> None:
        check_sigma_y(self.sigma_y)
        if not self.zeta >= 0:
            raise ConfigError(f"zeta ({self.label} step scale) must be >= 0, got {self.zeta}")
        check_var_type(self.var_type)


def dps_sample(denoiser, operator: Operator, y: torch.Tensor, p: DPSParams, *, steps: int = 1000,
               x_T: torch.Tensor | None = None, noise: NoiseSource | None = None,
               generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
    """Restore (B,3,H,W) float32 images ([-1,1] scale) from ``y`` with DPS."""
    check_grad_backend(denoiser, "DPS")
    zeta, var_type, clip = p.zeta, p.var_type, p.clip
    schedule, y, x, noise = prepare(denoiser, operator, y, x_T, noise, generator)
    plan, prediction = ancestral_steps(schedule, steps), denoiser.prediction
    for i, k in enumerate(plan):
        grad, out, x0, _, _ = norm_and_grad(denoiser.model_output, operator, y, x, k.t, k.a, prediction, clip)
        z = noise(x)
        mean = posterior_mean(k, x0, x)
        if i < len(plan) - 1:
            mean = mean + std_of(log_variance(out, k, var_type)) * z
        x = mean - zeta * grad
        if callback is not None:
            callback(i, x, x0)
    return x
