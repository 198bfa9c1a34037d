"""Whether ``ddpg restore`` runs the UNet over tiles of an image (``--tile auto|off|SIZE``, ``--tile-overlap PX``),
and what its sidecar records of that choice. The tiling itself is :mod:`ddpg.runtime.tiling`; the method's step
always runs on the whole image.

``auto`` tiles an image when its untiled pass would not fit in memory, or when its larger side exceeds
:data:`AUTO_TILE_RATIO` × the prior's native size (the measurement behind the ratio: ``docs/tiling.md``); a prior
without a native size (the analytic Gaussian one) is tiled only at a given SIZE."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ddpg.engine_metadata import BatchProfile
from ddpg.errors import ParameterError
from ddpg.runtime.tiling import TiledDenoiser, tile_call_batch

AUTO_TILE_RATIO = 1.5  # auto tiles an image whose larger side is above 1.5 × the prior's (docs/tiling.md)


@dataclass(frozen=True)
class TilePolicy:
    """What a request asks: ``mode`` "auto", "off" or "size"; ``tile`` the tile side (SIZE, else the prior's
    native size; None when there is none); ``overlap`` the least overlap of neighbours (pixels)."""

    mode: str
    tile: int | None
    overlap: int

    def decide(self, size: tuple[int, int], fits_untiled: Callable[[], bool]) -> tuple[bool, str]:
        """(tile it?, why) for an image of ``size`` (H, W); ``fits_untiled()``: whether the untiled pass fits."""
        if self.mode == "off":
            return False, "tiling is off"
        if self.tile is None:
            return False, "the prior has no native size (give --tile SIZE to tile)"
        if self.mode == "size":
            return True, f"--tile {self.tile}"
        if max(size) <= self.tile:
            return False, f"the image is not larger than the prior's {self.tile} px"
        if not fits_untiled():
            return True, "the untiled pass would not fit in memory"
        if max(size) > AUTO_TILE_RATIO * self.tile:
            return True, f"its larger side is above {AUTO_TILE_RATIO} × the prior's {self.tile} px"
        return False, f"its larger side is within {AUTO_TILE_RATIO} × the prior's {self.tile} px"

    def record(self, tiled: bool, reason: str, denoiser: TiledDenoiser | None, size: tuple[int, int]) -> dict:
        """The sidecar's ``tiling`` entry of an image of ``size`` (H, W) restored (un)tiled."""
        record = {"mode": self.mode if self.mode != "size" else str(self.tile), "tiled": tiled, "reason": reason}
        if tiled and denoiser is not None:
            layout = denoiser.layout(size)
            record.update(tile=layout.tile, overlap=layout.overlap, grid=list(layout.grid), tiles=layout.count,
                          tile_batch=denoiser.batch, starts={"y": list(layout.ys), "x": list(layout.xs)},
                          blend="raised-cosine ramps across each overlap, normalised to sum to 1")
        return record


def engine_tile_side(denoiser) -> int | None:
    """The side of the square images an ONNX Runtime/TensorRT/OpenVINO engine was exported for, the only tile it
    can run; None for a PyTorch prior (any tile) or a non-square export."""
    info = denoiser.info
    if info is None or info.size[0] != info.size[1]:
        return None
    return int(info.size[0])


def tile_policy(tile: str, overlap: int | None, native: int | None, multiple: int,
                engine_side: int | None = None) -> TilePolicy:
    """The policy of ``--tile`` (checked: "auto", "off" or digits) and ``--tile-overlap`` for a prior of native
    side ``native`` (None: none) whose sides must be multiples of ``multiple``; ``engine_side``: the one tile side
    an engine runs (:func:`engine_tile_side`), which auto takes and SIZE must equal."""
    mode = tile if tile in ("auto", "off") else "size"
    if mode == "size" and engine_side is not None and int(tile) != engine_side:
        raise ParameterError("tile", tile, f"the engine runs {engine_side}×{engine_side} tiles only (its export "
                                           f"size): give --tile {engine_side} or auto, or re-export it with "
                                           f"--size {tile} {tile}")
    side = int(tile) if mode == "size" else engine_side or native
    if mode == "size" and side % multiple:
        raise ParameterError("tile", tile, f"must be a multiple of {multiple} (the prior's downsampling)")
    if side is None:
        return TilePolicy(mode, None, 0)
    overlap = side // 4 if overlap is None else overlap
    if overlap >= side:
        raise ParameterError("tile_overlap", overlap, f"must be smaller than the tile ({side} px)")
    return TilePolicy(mode, side, overlap)


def tiled_denoiser(denoiser, policy: TilePolicy, engine_batch: BatchProfile | None,
                   tile_batch: int | None = None) -> TiledDenoiser | None:
    """``denoiser`` wrapped to run tiles of ``policy`` in calls of ``tile_batch`` tiles (``--tile-batch``, checked
    against ``engine_batch``, the batches an engine takes: :func:`~ddpg.runtime.tiling.tile_call_batch`); None
    when the policy never tiles."""
    batch = tile_call_batch(engine_batch, tile_batch)
    if policy.tile is None or policy.mode == "off":
        return None
    return TiledDenoiser(denoiser, policy.tile, policy.overlap, batch)
