"""Observations as the papers make them: y = A(x) + 2·sigma_y·n, and the noise std 2·sigma_y the samplers use."""

from __future__ import annotations

import torch

from ddpg.checks import check_sigma_y
from ddpg.errors import OperatorError

from .base import Operator


def noise_std(sigma_y: float) -> float:
    """The measurement noise's std on the [-1, 1] scale the samplers work in, 2·sigma_y, for ``sigma_y`` on the
    [0, 1] image scale (docs/methods.md §1): the one place the convention is written."""
    return 2.0 * sigma_y


def degrade(x: torch.Tensor, operator: Operator, sigma_y: float, *, seed: int | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """y = A(x) + 2·sigma_y·n, n ~ N(0, I), for x (B, 3, H, W) in [-1, 1] and sigma_y on the [0, 1] scale;
    not clipped, not quantised. ``seed`` makes a fresh generator on y's device; ``generator`` is used as is."""
    check_sigma_y(sigma_y)
    if seed is not None and generator is not None:
        raise OperatorError("degrade: pass seed or generator, not both")
    y = operator.A(x)
    if generator is None and seed is not None:
        generator = torch.Generator(device=y.device).manual_seed(seed)
    noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    return y + noise_std(sigma_y) * noise
