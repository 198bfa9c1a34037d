"""Validation shared by every layer, torch-free: the one σ_y rule and its default, integers, sides and the pixel
limit."""

from __future__ import annotations

import math

from ddpg.errors import ParameterError

DEFAULT_SIGMA_Y = 0.05  # the measurement noise std of a run that names none (and of the papers' main tables)
MAX_SIGMA_Y = 1.0  # a noise std beyond the whole [0, 1] image range is a mistake, not a measurement
DEFAULT_MAX_PIXELS = 2**25  # 33.5 M pixels (e.g. 8192 × 4096): larger images are refused before decoding


def check_sigma_y(sigma_y: object, param: str = "sigma_y") -> float:
    """``sigma_y`` as a float if it is a finite number in [0, :data:`MAX_SIGMA_Y`] (the noise std on the [0, 1]
    image scale); :class:`~ddpg.errors.ParameterError` naming ``param`` otherwise."""
    if isinstance(sigma_y, bool) or not isinstance(sigma_y, (int, float)) or not math.isfinite(sigma_y) \
            or not 0 <= sigma_y <= MAX_SIGMA_Y:
        raise ParameterError(param, sigma_y, f"must be a finite number in [0, {MAX_SIGMA_Y:g}] (the noise std on "
                                             "the [0, 1] image scale)")
    return float(sigma_y)


def check_int(param: str, value: object, minimum: int) -> None:
    """Refuse ``value`` unless it is an integer >= ``minimum`` (a :class:`~ddpg.errors.ParameterError` naming
    ``param``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(param, value, f"must be an integer >= {minimum}")


def check_side(size: object, max_pixels: int, param: str = "size") -> int:
    """``size`` (a resize target's side length, in pixels) if it is an integer >= 1 whose square image is within
    ``max_pixels``; :class:`~ddpg.errors.ParameterError` naming ``param`` otherwise."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ParameterError(param, size, "must be an integer >= 1")
    if size * size > max_pixels:
        raise ParameterError(param, size, f"a {size}×{size} image is {size * size:,} pixels, more than the limit of "
                                          f"{max_pixels:,} (max_pixels)")
    return size


TILE_MODES = ("auto", "off")  # --tile: these words, or a tile side in pixels


def check_tile(tile: object) -> str | int:
    """``tile`` as "auto", "off" or a tile side (an integer >= 8, given as an int or its digits);
    :class:`~ddpg.errors.ParameterError` naming ``tile`` otherwise."""
    if isinstance(tile, str) and tile in TILE_MODES:
        return tile
    side = int(tile) if isinstance(tile, str) and tile.isdigit() else tile
    if isinstance(side, bool) or not isinstance(side, int) or side < 8:
        raise ParameterError("tile", tile, f"must be {' or '.join(TILE_MODES)} or a tile side in pixels (>= 8)")
    return side
