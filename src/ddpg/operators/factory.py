"""What the task builders take from a user: image sizes, scales, arrays/kernels from files, inpainting masks
(checked, with an OperatorError naming the problem)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ddpg.errors import OperatorError
from ddpg.io import DEFAULT_MAX_PIXELS, load_npy, open_image

from .svd import check_divisible


def check_size(size) -> tuple[int, int]:
    """(H, W) from an int or a pair of positive ints."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in hw):
        raise OperatorError(f"size must be a positive int or (H, W), got {size!r}")
    return int(hw[0]), int(hw[1])


def check_scale(task: str, scale, hw: tuple[int, int]) -> int:
    """``scale`` (a positive integer: ``tasks.check_params``) as an int if it divides the image size ``hw``."""
    check_divisible(task, hw, int(scale))
    return int(scale)


def load_array(source, what: str) -> np.ndarray:
    """A 2-D array from an array/tensor, a .npy file, or an image file (grey levels)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise OperatorError(f"{path}: {what} file not found")
        try:
            if path.suffix == ".npy":
                arr = load_npy(path, DEFAULT_MAX_PIXELS)
            else:
                with open_image(path) as im:
                    arr = np.asarray(im.convert("L"), dtype=np.float64)
        except (OSError, ValueError, SyntaxError) as exc:
            raise OperatorError(f"{path}: cannot read {what}: {exc}") from exc
    else:
        arr = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2:
        raise OperatorError(f"{what} must be 2-D, got shape {arr.shape}")
    return arr


def normalised(kernel: np.ndarray, what: str) -> np.ndarray:
    """kernel / kernel.sum(), refusing kernels that are not finite or sum to zero."""
    total = kernel.sum()
    if not np.isfinite(kernel).all() or total == 0:
        raise OperatorError(f"{what} must be finite with a non-zero sum")
    return kernel / total


def make_mask(size: tuple[int, int], mask=None, box=None, ratio=None, seed: int = 0) -> torch.Tensor:
    """Inpainting mask (H, W) bool, True = kept: a given mask (array/file, non-zero = kept), a box
    (top, left, height, width) of missing pixels, or a random ``ratio`` of missing pixels; default: a centred
    box of half the size."""
    H, W = size
    if mask is not None:
        arr = load_array(mask, "mask")
        if arr.shape != (H, W):
            raise OperatorError(f"inpainting: mask has shape {arr.shape}, the image is {(H, W)}")
        return torch.as_tensor(arr > 0)
    if ratio is not None:
        if not 0 <= ratio < 1:
            raise OperatorError(f"inpainting: missing ratio must be in [0, 1), got {ratio}")
        g = torch.Generator().manual_seed(seed)
        return torch.rand(H, W, generator=g) >= ratio
    top, left, h, w = box if box is not None else (H // 4, W // 4, H // 2, W // 2)
    if h <= 0 or w <= 0 or top < 0 or left < 0 or top + h > H or left + w > W:
        raise OperatorError(f"inpainting: box {box} does not fit the image {(H, W)}")
    m = torch.ones(H, W, dtype=torch.bool)
    m[top:top + h, left:left + w] = False
    return m
