"""Observations as the papers make them, and the measurement-only baselines users compare against."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ddpg.errors import OperatorError

from .base import Operator


def degrade(x: torch.Tensor, operator: Operator, sigma_y: float, *, seed: int | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """y = A(x) + 2·sigma_y·n, n ~ N(0, I) (sigma_y on the [0, 1] scale, x in [-1, 1]); not clipped."""
    if sigma_y < 0:
        raise OperatorError(f"sigma_y must be >= 0, got {sigma_y}")
    y = operator.A(x)
    if generator is None and seed is not None:
        generator = torch.Generator(device=y.device).manual_seed(seed)
    noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    return y + 2.0 * sigma_y * noise


def baseline(operator: Operator, y: torch.Tensor, eta: float = 1e-2) -> torch.Tensor:
    """The measurement-only restoration: bicubic upsampling for SR, Tikhonov Aᵀ(AAᵀ+ηI)⁻¹y otherwise
    (for inpainting, denoising and colorization that is the pseudo-inverse up to 1/(1+η))."""
    if operator.name in ("sr_bicubic", "sr_avgpool"):
        return bicubic_upsample(y, operator.img_size)
    return operator.pinv_eta(y, eta)


def bicubic_upsample(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(y, size=size, mode="bicubic", align_corners=False)
