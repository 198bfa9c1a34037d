"""Pieces the samplers share: the input check, the start-up, noise sources, the timestep vector, x̂₀ from ε,
lifting y to image size, and the [0, 1] range check of the noise-mixing weights."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ddpg.errors import ConfigError
from ddpg.operators.base import Operator
from ddpg.schedule import Schedule, linear_schedule

NoiseSource = Callable[[torch.Tensor], torch.Tensor]  # noise(like) -> N(0, I) shaped like ``like``


def gaussian_noise(generator: torch.Generator | None = None) -> NoiseSource:
    """A noise source drawing N(0, I) like its argument from ``generator``."""
    def draw(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    return draw


def check_inputs(operator: Operator, y: torch.Tensor, x_T: torch.Tensor | None = None) -> tuple[int, ...]:
    """Refuse a measurement that is not a tensor of the operator's measurement shape, and an x_T that is not
    (B,3,H,W) for it; returns that image shape (B,3,H,W)."""
    if not isinstance(y, torch.Tensor):
        raise ConfigError(f"y must be a torch.Tensor of shape {tuple(operator.meas_shape(1))}, got "
                          f"{type(y).__name__}")
    expected = operator.meas_shape(y.shape[0] if y.ndim == 4 else 1)
    if tuple(y.shape) != tuple(expected):
        raise ConfigError(f"y has shape {tuple(y.shape)} but the {operator.name} operator for "
                          f"{operator.img_size} images measures {tuple(expected)}")
    shape = (y.shape[0], 3, *operator.img_size)
    if x_T is not None and tuple(x_T.shape) != shape:
        raise ConfigError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
    return shape


def prepare(denoiser, operator: Operator, y: torch.Tensor, x_T: torch.Tensor | None,
            noise: NoiseSource | None, generator: torch.Generator | None
            ) -> tuple[Schedule, torch.Tensor, torch.Tensor, NoiseSource]:
    """Check y and x_T and return (schedule, y float32, x_T (B,3,H,W) float32 ~ N(0, I), noise source)."""
    shape = check_inputs(operator, y, x_T)
    schedule = getattr(denoiser, "schedule", None) or linear_schedule()
    y = y.float()
    if x_T is None:
        x_T = torch.randn(shape, generator=generator, device=y.device)
    return schedule, y, x_T.to(y.device, torch.float32), noise or gaussian_noise(generator)


def timestep(x: torch.Tensor, t: float) -> torch.Tensor:
    """The (B,) float32 timestep vector the denoiser takes."""
    return torch.full((x.shape[0],), float(t), device=x.device)


def predict_x0(x: torch.Tensor, eps: torch.Tensor, a: float) -> torch.Tensor:
    """x̂₀ = (x_t − √(1−a)·ε)/√a."""
    return (x - math.sqrt(1 - a) * eps) / math.sqrt(a)


def lift(y: torch.Tensor, img_size: tuple[int, int], mode: str) -> torch.Tensor:
    """A measurement as an image (B,3,H,W): resized to ``img_size`` (``mode`` "bicubic" or "nearest") when
    smaller (SR), a single channel (colorization) repeated three times, same-size measurements unchanged."""
    if tuple(y.shape[-2:]) != tuple(img_size):
        y = F.interpolate(y, size=img_size, mode=mode, **({"align_corners": False} if mode == "bicubic" else {}))
    return y.expand(-1, 3, -1, -1) if y.shape[1] == 1 else y


def check_unit_interval(name: str, value: float) -> float:
    """``value`` as a float, refused unless in [0, 1] (noise-mixing weights: η, η_b, ζ)."""
    value = float(value)
    if not 0 <= value <= 1:
        raise ConfigError(f"{name} must be in [0, 1], got {value}")
    return value
