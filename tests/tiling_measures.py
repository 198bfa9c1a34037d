"""The measures of the tiling tests and benchmarks (test helper): the 2×2 face mosaic, the crowd photo, the tile
borders of a layout, and the seam ratio."""

from __future__ import annotations

from pathlib import Path

import torch

from ddpg.io import load_image
from ddpg.runtime.tiling import TiledDenoiser

FACES = sorted((Path(__file__).resolve().parent / "fixtures" / "faces64_dev").glob("*.png"))
FACE_BORDER = 64  # the mosaic's faces meet here (rows and columns)


def mosaic(faces: list[torch.Tensor]) -> torch.Tensor:
    """(3, 128, 128) of four (3, 64, 64) faces: top left, top right, bottom left, bottom right."""
    return torch.cat([torch.cat(faces[:2], 2), torch.cat(faces[2:4], 2)], 1)


def crowd(side: int) -> torch.Tensor:
    """(3, side, side) in [0, 1]: the dev faces in a grid, row by row, every other one mirrored (a photo far larger
    than face64's 64 px)."""
    faces = [load_image(f) for f in FACES]
    n = -(-side // 64)
    rows = [torch.cat([faces[(r * n + c) % len(faces)].flip(-1) if (r + c) % 2 else faces[(r * n + c) % len(faces)]
                       for c in range(n)], 2) for r in range(n)]
    return torch.cat(rows, 1)[:, :side, :side]


def tile_borders(denoiser: TiledDenoiser, size: int) -> list[int]:
    """The columns (= rows, square image) c inside the image where a tile starts or ends: pixel c−1 | c."""
    layout = denoiser.layout((size, size))
    edges = {s + d - layout.margin for s in layout.xs for d in (0, layout.tile)}
    return sorted(e for e in edges if 0 < e < size)


def seam_ratio(diff: torch.Tensor, borders: list[int], skip: tuple[int, ...] = (FACE_BORDER,)) -> float:
    """Mean |gradient| of ``diff`` (…, H, W) across ``borders`` (between pixels c−1 and c, rows and columns) over
    its mean across every other pixel pair; the pairs at ``skip`` (the faces' own borders) count in neither."""
    gx = (diff[..., :, 1:] - diff[..., :, :-1]).abs().flatten(0, -3).mean(dim=(0, 1))  # (W-1,): pair c-1|c at c-1
    gy = (diff[..., 1:, :] - diff[..., :-1, :]).abs().flatten(0, -3).mean(dim=(0, 2))
    at = torch.zeros_like(gx, dtype=torch.bool)
    at[[b - 1 for b in borders if b not in skip]] = True
    other = ~at
    other[[s - 1 for s in skip]] = False
    return float(torch.cat([gx[at], gy[at]]).mean() / torch.cat([gx[other], gy[other]]).mean())
