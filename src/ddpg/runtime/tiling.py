"""Any-size images through a prior of one native size: the UNet sees overlapping tiles, the method sees the image.

:class:`TileLayout` places square tiles of side ``tile`` over an (H, W) image, spread evenly along each axis so
that neighbours overlap by at least ``overlap`` pixels, and gives each tile a smooth weight: a raised-cosine
ramp across each overlap with a neighbour, flat elsewhere, normalised so that the weights of the tiles covering
a pixel sum to one there (a partition of unity, per axis and so in 2-D). ``cut`` takes tiles of an image batch,
``blend`` adds weighted tile outputs back into an image. A side shorter than ``tile`` is padded to it (and cropped
back). Where the prior treats the image as periodic (the analytic Gaussian prior's FFTs), the image is first
wrapped around by a margin of the overlap, so that its border is blended like any tile border, as the untiled
prior sees it; a UNet sees the image's border as it would untiled, at a tile's edge.

:class:`TiledDenoiser` wraps any denoiser (:class:`~ddpg.models.denoiser.DenoiserInterface`, any backend) in the
same interface: per call it cuts x_t into tiles, runs all tiles of all images as one stream of ``batch``-sized
calls of the inner denoiser (padded to that batch for a fixed-batch engine) and blends the outputs with the
weights. ε, x̂₀ and v are all affine in the output for a given x_t, so blending the output blends each of them
with the same weights. The method's step then runs on the whole image with the whole-image operator; no tile
border enters A, Aᵀ or P_η. An image of exactly the tile size is passed to the inner denoiser unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F

from ddpg.engine_metadata import BatchProfile
from ddpg.errors import ParameterError

DEFAULT_TILE_BATCH = 16  # tiles per UNet call of a torch prior (an engine: its largest batch)


def tile_call_batch(engine_batch: BatchProfile | None, requested: int | None = None) -> int:
    """Tiles per inner denoiser call: ``requested`` (``--tile-batch``, ≥ 1 as its option checks), which must be a
    batch the engine takes (``engine_batch``; None for a PyTorch prior, which takes any); by default the engine's
    largest batch, else :data:`DEFAULT_TILE_BATCH`."""
    if engine_batch is None:
        return requested or DEFAULT_TILE_BATCH
    if requested is not None and requested != engine_batch.max:
        if engine_batch.fixed:
            raise ParameterError("tile_batch", requested, f"the engine runs batches of {engine_batch.max} only")
        if requested > engine_batch.max:
            raise ParameterError("tile_batch", requested, f"the engine takes at most {engine_batch.max} per call "
                                                          f"(re-export it with --batch 1:{requested}:{requested})")
    return requested or engine_batch.max


def fill_batch(x: torch.Tensor, t: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, t) of a short call filled up to ``batch`` rows with copies of the first (a fixed-batch engine's call,
    whose extra outputs the caller drops); unchanged when already ``batch`` rows."""
    short = batch - x.shape[0]
    if short <= 0:
        return x, t
    return torch.cat([x, x[:1].expand(short, -1, -1, -1)]), torch.cat([t, t[:1].expand(short)])


def axis_starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Tile starts along one axis of ``length`` pixels: the fewest tiles of side ``tile`` whose neighbours overlap
    by at least ``overlap`` (0 ≤ overlap < tile), spread evenly from 0 to length − tile; (0,) when length ≤ tile."""
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, {tile}), got {overlap}")
    if length <= tile:
        return (0,)
    n = math.ceil((length - tile) / (tile - overlap)) + 1
    return tuple(round(i * (length - tile) / (n - 1)) for i in range(n))


def axis_weights(starts: tuple[int, ...], tile: int) -> torch.Tensor:
    """(n, tile) float64 weights of the tiles at ``starts``: sin² rising across the overlap with the previous tile,
    cos² falling across the overlap with the next (flat at the image's ends), divided by their sum over the tiles
    covering each pixel, so that they sum to one at every pixel."""
    n = len(starts)
    w = torch.ones(n, tile, dtype=torch.float64)
    for i in range(n - 1):
        o = starts[i] + tile - starts[i + 1]  # this pair's overlap (pixels)
        if o > 0:
            rise = torch.sin(math.pi / 2 * (torch.arange(o, dtype=torch.float64) + 0.5) / o) ** 2
            w[i, tile - o:] *= 1 - rise
            w[i + 1, :o] *= rise
    total = torch.zeros(starts[-1] + tile, dtype=torch.float64)
    for s, wi in zip(starts, w, strict=True):
        total[s:s + tile] += wi
    return torch.stack([wi / total[s:s + tile] for s, wi in zip(starts, w, strict=True)])


@dataclass(frozen=True)
class TileLayout:
    """The tiles of one (H, W) image size: ``ys`` × ``xs`` starts (row-major order), side ``tile``, overlap at
    least ``overlap``."""

    size: tuple[int, int]
    tile: int
    overlap: int
    margin: int = 0  # pixels padded at every border before tiling, so that no tile edge falls on the image's
    border: str = "replicate"  # how the margin (and a side shorter than the tile) is filled: "replicate" or
    # "circular" (modes of torch.nn.functional.pad)
    _weights: dict = field(default_factory=dict, compare=False, repr=False)  # (device, dtype) → axis weights

    @cached_property
    def ys(self) -> tuple[int, ...]:
        return axis_starts(self.padded[0], self.tile, self.overlap)

    @cached_property
    def xs(self) -> tuple[int, ...]:
        return axis_starts(self.padded[1], self.tile, self.overlap)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, columns) of tiles."""
        return len(self.ys), len(self.xs)

    @property
    def count(self) -> int:
        """Tiles per image."""
        return len(self.ys) * len(self.xs)

    @property
    def padded(self) -> tuple[int, int]:
        """The size the tiles cover: the image with its margin on every side, each side at least ``tile`` (the
        bottom and right padded further where shorter)."""
        return tuple(max(n + 2 * self.margin, self.tile) for n in self.size)  # type: ignore[return-value]

    @property
    def identity(self) -> bool:
        """Whether the one tile is the image itself (tiling changes nothing)."""
        return self.size == (self.tile, self.tile)

    def weight(self, k: int, device, dtype=torch.float32) -> torch.Tensor:
        """(tile, tile) weight of tile ``k`` (row-major): the outer product of its axis weights in ``dtype`` (kept
        on ``device`` after the first call, so a call does no host-to-device copy)."""
        key = (str(device), dtype)
        if key not in self._weights:
            self._weights[key] = tuple(axis_weights(s, self.tile).to(device, dtype) for s in (self.ys, self.xs))
        wy, wx = self._weights[key]
        i, j = divmod(k, len(self.xs))
        return wy[i, :, None] * wx[j, None, :]

    def weight_map(self, dtype=torch.float64) -> torch.Tensor:
        """(H', W') sum of every tile's weight at each pixel of the padded size (1 up to rounding)."""
        total = torch.zeros(self.padded, dtype=dtype)
        for k in range(self.count):
            y, x = self.origin(k)
            total[y:y + self.tile, x:x + self.tile] += self.weight(k, "cpu", dtype)
        return total

    def origin(self, k: int) -> tuple[int, int]:
        """(y, x) of tile ``k``'s top-left pixel."""
        i, j = divmod(k, len(self.xs))
        return self.ys[i], self.xs[j]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """x (B,C,H,W) padded to :attr:`padded`: the margin on every side, then the bottom and right, filled as
        ``border`` says (by edge replication where the image is too small to wrap around once)."""
        (H, W), (Hp, Wp), m = self.size, self.padded, self.margin
        if (H, W) == (Hp, Wp):
            return x
        pads = (m, Wp - W - m, m, Hp - H - m)
        wraps = self.border == "circular" and max(pads[:2]) <= W and max(pads[2:]) <= H
        return F.pad(x, pads, mode="circular" if wraps else "replicate")

    def crop(self, out: torch.Tensor) -> torch.Tensor:
        """The image's own pixels (…, H, W) of a padded output (…, H', W')."""
        (H, W), m = self.size, self.margin
        return out[..., m:m + H, m:m + W]

    def cut(self, x: torch.Tensor, items: list[tuple[int, int]]) -> torch.Tensor:
        """Tiles (len(items), C, tile, tile) of the padded batch ``x`` (B,C,H',W'): item (b, k) is image b's tile k."""
        T = self.tile
        return torch.stack([x[b, :, y:y + T, x0:x0 + T] for b, k in items for y, x0 in (self.origin(k),)])

    def blend(self, out: torch.Tensor, tiles: torch.Tensor, items: list[tuple[int, int]]) -> None:
        """Add each tile output (n, C, tile, tile), times its weight, into ``out`` (B,C,H',W') in place."""
        T = self.tile
        for (b, k), tile in zip(items, tiles, strict=True):
            y, x = self.origin(k)
            out[b, :, y:y + T, x:x + T] += tile * self.weight(k, tile.device, tile.dtype)

    def items(self, batch: int) -> list[tuple[int, int]]:
        """Every (image, tile) of a batch of ``batch`` images, image by image: the order of the tile stream."""
        return [(b, k) for b in range(batch) for k in range(self.count)]


class TiledDenoiser:
    """``inner`` (any denoiser) run over overlapping ``tile``-px tiles of each input, blended (see the module
    docstring). Same interface as ``inner``, whose fields it forwards; ``batch``: tiles per inner call (an
    engine's largest batch; a fixed-batch engine gets every call padded to it); ``wrap``: give the tiles a margin
    wrapped around the image (default: where the prior's config says its ``boundary`` is periodic)."""

    def __init__(self, inner, tile: int, overlap: int, batch: int, wrap: bool | None = None):
        if tile < 1 or batch < 1:
            raise ValueError(f"need tile >= 1 and batch >= 1, got tile {tile}, batch {batch}")
        axis_starts(tile, tile, overlap)  # refuses an overlap outside [0, tile)
        self.inner, self.tile, self.overlap, self.batch = inner, int(tile), int(overlap), int(batch)
        # ``wrap`` (default: whether the prior is periodic): the image's border as the prior sees it untiled. A
        # periodic prior (the analytic one) continues the image around it, so the tiles get a wrapped margin of the
        # overlap; a UNet sees the border itself, at a tile's edge (no margin)
        if wrap is None:
            wrap = inner.config.get("boundary") == "periodic"
        self.margin, self.border = (self.overlap, "circular") if wrap else (0, "replicate")
        info = inner.info
        self.fixed_batch = info is not None and info.batch.fixed
        self.backend, self.capabilities, self.name = inner.backend, inner.capabilities, inner.name
        self.config, self.schedule, self.prediction = inner.config, inner.schedule, inner.prediction
        self.graph_safe, self.compile_mode = inner.graph_safe, inner.compile_mode  # its calls are device ops only
        self.prior, self.info = inner.prior, inner.info
        self._layouts: dict[tuple[int, int], TileLayout] = {}
        self.tile_calls = 0  # tiles the inner denoiser has run (padding rows of fixed-batch calls not counted)

    def options(self) -> dict:
        return self.inner.options()

    def layout(self, size: tuple[int, int]) -> TileLayout:
        """The tile layout of an (H, W) image (built once per size)."""
        size = (int(size[0]), int(size[1]))
        if size not in self._layouts:
            self._layouts[size] = TileLayout(size, self.tile, self.overlap, self.margin, self.border)
        return self._layouts[size]

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._tiled(self.inner, x_t, t)

    def model_output(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Every output channel, tiled and blended (differentiable in x_t where the inner one is)."""
        return self._tiled(self.inner.model_output, x_t, t)

    def _tiled(self, run, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        layout = self.layout(x_t.shape[-2:])
        if layout.identity:
            return run(x_t, t)
        x = layout.pad(x_t)
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        t = t.repeat_interleave(layout.count)  # the tile stream's timesteps
        out = None
        items = layout.items(x.shape[0])
        for first in range(0, len(items), self.batch):
            chunk = items[first:first + self.batch]
            tiles, tt = layout.cut(x, chunk), t[first:first + len(chunk)]
            if self.fixed_batch:
                tiles, tt = fill_batch(tiles, tt, self.batch)
            result = run(tiles, tt).float()[:len(chunk)]
            if out is None:
                out = x.new_zeros((x.shape[0], result.shape[1], *layout.padded))
            layout.blend(out, result, chunk)
            self.tile_calls += len(chunk)
        return layout.crop(out)
