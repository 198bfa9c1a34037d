"""Pieces the samplers share: the input check, the start-up, noise sources, the timestep vector, row scalars
as tensor coefficients, x̂₀ and ε from the prior's output (whatever it predicts), lifting y to image size, and
the [0, 1] range check of the noise-mixing weights."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ddpg.errors import ConfigError
from ddpg.models.denoiser import PREDICTIONS
from ddpg.operators.base import Operator
from ddpg.schedule import Schedule

NoiseSource = Callable[[torch.Tensor], torch.Tensor]  # noise(like) -> N(0, I) shaped like ``like``
Scalar = float | torch.Tensor  # a Python float, a 0-d tensor, or one value per sample shaped (B, 1, 1, 1)


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
    schedule = denoiser.schedule
    y = y.float()
    if x_T is None:
        x_T = torch.randn(shape, generator=generator, device=y.device)
    return schedule, y, x_T.to(y.device, torch.float32), noise or gaussian_noise(generator)


def timestep(x: torch.Tensor, t: float) -> torch.Tensor:
    """The (B,) float32 timestep vector the denoiser takes."""
    return torch.full((x.shape[0],), float(t), device=x.device)


def coef(v: Scalar, like: torch.Tensor) -> Scalar:
    """A row entry ready to multiply ``like``: a float as it is (torch rounds it to like's dtype), a tensor
    rounded to like's dtype, so both forms enter the product with the same value."""
    return v.to(like.dtype) if isinstance(v, torch.Tensor) else v


def eps_from_x0(x: torch.Tensor, x0: torch.Tensor, sqrt_a: Scalar, sqrt_1m_a: Scalar) -> torch.Tensor:
    """The ε that x_t = √a·x̂₀ + √(1−a)·ε leaves: (x_t − √a·x̂₀)/√(1−a), (B,3,H,W) (a = ᾱ_t < 1)."""
    return (x - coef(sqrt_a, x) * x0) / coef(sqrt_1m_a, x)


def x0_and_eps(x: torch.Tensor, out: torch.Tensor, sqrt_a: Scalar, sqrt_1m_a: Scalar, prediction: str
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂₀, ε), each (B,3,H,W), from x_t and the prior's output ``out`` (B,3,H,W) at a = ᾱ_t, given as √a and
    √(1−a) (row entries: :func:`coef`); ``prediction`` (:func:`ddpg.models.prediction_type`) says what out is:
    "epsilon": x̂₀ = (x_t − √(1−a)·ε)/√a;  "x0": ε by :func:`eps_from_x0`;
    "v" (v = √a·ε − √(1−a)·x₀): x̂₀ = √a·x_t − √(1−a)·v, ε = √(1−a)·x_t + √a·v."""
    sqrt_a, sqrt_1m_a = coef(sqrt_a, x), coef(sqrt_1m_a, x)
    if prediction == "epsilon":
        return (x - sqrt_1m_a * out) / sqrt_a, out
    if prediction == "x0":
        return out, eps_from_x0(x, out, sqrt_a, sqrt_1m_a)
    if prediction == "v":
        return sqrt_a * x - sqrt_1m_a * out, sqrt_1m_a * x + sqrt_a * out
    raise ConfigError(f"unknown prediction type {prediction!r}; choose one of {', '.join(PREDICTIONS)}")


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
