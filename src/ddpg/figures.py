"""Comparison grids: rows of images (3, H, W) in [0, 1] under labelled columns, as one (3, H, W) tensor."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

MIN_PANEL = 96  # small images are enlarged (nearest) to at least this height so they can be inspected
GAP = 4
HEADER = 16


def fit_panel(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``img`` (1 or 3, h, w) nearest-resized to ``size`` (H, W) and given 3 channels."""
    img = img[:3].float()
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    if tuple(img.shape[1:]) != tuple(size):
        img = F.interpolate(img[None], size=size, mode="nearest")[0]
    return img.clamp(0, 1)


def comparison_grid(rows: list[list[torch.Tensor | None]], labels: list[str]) -> torch.Tensor:
    """A white canvas with one labelled column per entry of ``labels`` and one row per entry of ``rows``
    (None: an empty panel). Every panel of a row takes the size of the row's first image, enlarged by an
    integer factor to at least MIN_PANEL pixels high."""
    panels: list[list[torch.Tensor | None]] = []
    for row in rows:
        first = next(p for p in row if p is not None)
        factor = max(1, math.ceil(MIN_PANEL / first.shape[1]))
        size = (first.shape[1] * factor, first.shape[2] * factor)
        panels.append([None if p is None else fit_panel(p, size) for p in row])
    widths = [max((r[c].shape[2] for r in panels if r[c] is not None), default=MIN_PANEL)
              for c in range(len(labels))]
    heights = [max(p.shape[1] for p in r if p is not None) for r in panels]
    canvas = torch.ones(3, HEADER + sum(heights) + GAP * len(heights), sum(widths) + GAP * (len(widths) - 1))
    top = HEADER
    for row, height in zip(panels, heights, strict=True):
        left = 0
        for panel, width in zip(row, widths, strict=True):
            if panel is not None:
                canvas[:, top:top + panel.shape[1], left:left + panel.shape[2]] = panel
            left += width + GAP
        top += height + GAP
    return _draw_labels(canvas, labels, widths)


def _draw_labels(canvas: torch.Tensor, labels: list[str], widths: list[int]) -> torch.Tensor:
    pil = Image.fromarray((canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    left = 0
    for label, width in zip(labels, widths, strict=True):
        text = label
        while len(text) > 1 and draw.textlength(text, font=font) > width:
            text = text[:-1]
        draw.text((left + 2, 2), text, fill=(0, 0, 0), font=font)
        left += width + GAP
    return torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
