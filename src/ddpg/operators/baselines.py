"""Measurement-only restorations users compare against: bicubic upsampling for SR, the pseudo-inverse, and
Tikhonov Aᵀ(AAᵀ + ηI)⁻¹y (= argmin ‖Ax − y‖² + η‖x‖²) for everything else. Inputs and outputs in [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ddpg.errors import OperatorError

from .base import Operator

METHODS = ("auto", "bicubic", "pinv", "tikhonov")
DEFAULT_ETA = 1e-2


def is_super_resolution(operator: Operator) -> bool:
    return getattr(operator, "scale", 1) > 1


def auto_baseline_name(operator: Operator) -> str:
    """What :func:`baseline` computes with its defaults (method "auto", η = DEFAULT_ETA), for reports."""
    return "bicubic" if is_super_resolution(operator) else f"tikhonov (eta={DEFAULT_ETA:g})"


def bicubic_upsample(y: torch.Tensor, size: tuple[int, int],
                     sample_offset: tuple[float, float] | None = None) -> torch.Tensor:
    """Bicubic (Keys a = −0.75, PyTorch's) upsampling of y (B, C, h, w) to ``size`` (H, W), edge-replicated.

    ``sample_offset``: high-resolution (row, col) position of low-resolution sample (0, 0), so that sample
    r sits at scale·r + offset; None means block-centred ((scale − 1)/2, ``align_corners=False``)."""
    H, W = size
    h, w = y.shape[-2:]
    if H % h or W % w:
        raise OperatorError(f"bicubic_upsample: {(H, W)} is not a multiple of the input size {(h, w)}")
    if sample_offset is None:
        return F.interpolate(y, size=(H, W), mode="bicubic", align_corners=False)
    # low-resolution coordinate of high-resolution pixel i: (i − offset)/scale; grid_sample's normalised
    # coordinate of a pixel position u (align_corners=False) is (2u + 1)/n − 1
    rows = ((torch.arange(H, dtype=y.dtype, device=y.device) - sample_offset[0]) / (H // h) * 2 + 1) / h - 1
    cols = ((torch.arange(W, dtype=y.dtype, device=y.device) - sample_offset[1]) / (W // w) * 2 + 1) / w - 1
    grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    grid = grid.expand(y.shape[0], H, W, 2)
    return F.grid_sample(y, grid, mode="bicubic", padding_mode="border", align_corners=False)


def pinv_baseline(operator: Operator, y: torch.Tensor) -> torch.Tensor:
    """A⁺y, the minimum-norm least-squares solution (B, 3, H, W)."""
    return operator.pinv(y)


def tikhonov(operator: Operator, y: torch.Tensor, eta: float = DEFAULT_ETA) -> torch.Tensor:
    """argmin_x ‖Ax − y‖² + η‖x‖² = Aᵀ(AAᵀ + ηI)⁻¹y (B, 3, H, W); η > 0."""
    return operator.pinv_eta(y, eta)


def baseline(operator: Operator, y: torch.Tensor, eta: float = DEFAULT_ETA, *, method: str = "auto") -> torch.Tensor:
    """The measurement-only restoration of y (B, 3, H, W) in [-1, 1]. ``auto``: phase-aware bicubic
    upsampling for SR (``operator.scale`` > 1), Tikhonov with ``eta`` otherwise (for inpainting, denoising
    and colorization that is the pseudo-inverse up to the factor ‖w‖²/(‖w‖² + η))."""
    if method not in METHODS:
        raise OperatorError(f"baseline: method must be one of {METHODS}, got {method!r}")
    is_sr = is_super_resolution(operator)
    if method == "bicubic" or (method == "auto" and is_sr):
        if not is_sr:
            raise OperatorError(f"baseline: bicubic upsampling needs an SR operator, not {operator.name}")
        operator.check_measurement(y)
        return bicubic_upsample(y, operator.img_size, operator.sample_offset)
    if method == "pinv":
        return pinv_baseline(operator, y)
    return tikhonov(operator, y, eta)
