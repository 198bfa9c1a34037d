"""Image sizes: centre crop + resize to a model's size, and reflect padding to a multiple."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ddpg.errors import InputError


def center_crop_resize(img: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Centre crop to the aspect ratio of ``size`` (square for an int), then bilinear antialiased resize
    (the papers' ImageNet preprocessing: CenterCropLongEdge → Resize)."""
    H, W = (size, size) if isinstance(size, int) else size
    _, h, w = img.shape
    scale = min(h / H, w / W)
    ch, cw = round(H * scale), round(W * scale)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = img[:, top:top + ch, left:left + cw]
    if (ch, cw) == (H, W):
        return crop
    return F.interpolate(crop[None], size=(H, W), mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(0, 1)


def padded_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """The smallest (H', W') ≥ size with both sides multiples of ``multiple``."""
    return tuple(math.ceil(n / multiple) * multiple for n in size)  # type: ignore[return-value]


def pad_bottom_right(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pad (…, C, H, W) at the bottom and right to ``size`` by reflection (edge replication where the
    image is too small to reflect)."""
    H, W = img.shape[-2:]
    ph, pw = size[0] - H, size[1] - W
    if ph < 0 or pw < 0:
        raise InputError(f"cannot pad {(H, W)} to the smaller {tuple(size)}")
    if ph == pw == 0:
        return img
    batched = img if img.ndim == 4 else img[None]
    mode = "reflect" if ph < H and pw < W else "replicate"
    out = F.pad(batched.float(), (0, pw, 0, ph), mode=mode).to(img.dtype)
    return out if img.ndim == 4 else out[0]
