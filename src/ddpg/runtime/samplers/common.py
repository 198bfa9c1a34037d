"""Pieces the peer samplers share: starting noise, the timestep vector, x̂₀ from ε, lifting y to image size."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ddpg.errors import ConfigError

from .ddpg import prepare  # noqa: F401  (shared start-up of every sampler, defined beside DDPG)


def timestep(x: torch.Tensor, t: int) -> torch.Tensor:
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


def check_eta(name: str, value: float) -> float:
    value = float(value)
    if not 0 <= value <= 1:
        raise ConfigError(f"{name} must be in [0, 1], got {value}")
    return value
