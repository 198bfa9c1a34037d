"""16-bit PNG through pypng (Pillow reduces 16-bit RGB to 8 bits and writes 16-bit grey only): encoding,
and decoding straight or Adam7-interlaced within the pixel limit."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import png

from ddpg.checks import DEFAULT_MAX_PIXELS
from ddpg.errors import InputError
from ddpg.io.bounded import check_pixels, inflate_bounded

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Adam7's seven passes: (x0, y0, dx, dy), the first pixel and the steps between pixels
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def encode_png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (pypng) of (H, W) grey or (H, W, 3) RGB uint16 samples (Pillow writes 16-bit grey only)."""
    H, W = arr.shape[:2]
    buf = io.BytesIO()
    png.Writer(W, H, bitdepth=16, greyscale=arr.ndim == 2).write(buf, np.ascontiguousarray(arr).reshape(H, -1))
    return buf.getvalue()


def png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file, None for other files."""
    with open(path, "rb") as fh:
        head = fh.read(29)
    if len(head) < 29 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def png_passes(width: int, height: int, interlaced: bool) -> list[tuple[int, int, int, int, int, int]]:
    """(x0, y0, dx, dy, w, h) of each non-empty pass of a PNG's pixel data: w × h pixels at (x0 + i·dx,
    y0 + j·dy); one pass of the whole image, or Adam7's seven (those of no pixels left out, as PNG stores them)."""
    passes = []
    for x0, y0, dx, dy in ADAM7 if interlaced else ((0, 0, 1, 1),):
        w, h = -(-max(width - x0, 0) // dx), -(-max(height - y0, 0) // dy)
        if w and h:
            passes.append((x0, y0, dx, dy, w, h))
    return passes


def _idat(reader: png.Reader) -> bytes:
    """The IDAT chunks from the reader's position up to IEND, joined (pypng checks each chunk's CRC)."""
    parts = []
    while (chunk := reader.chunk())[0] != b"IEND":
        if chunk[0] == b"IDAT":
            parts.append(chunk[1])
    return b"".join(parts)


def decode_png16(data: bytes, path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, C) uint16 samples of a 16-bit PNG, straight or Adam7-interlaced (Pillow reduces 16-bit RGB to 8
    bits). The header's size is checked against ``max_pixels`` before any pixel is decompressed, and the pixel
    data is inflated only as far as that size needs (:func:`inflate_bounded`); pypng reads the header and undoes
    each scanline's filter."""
    reader = png.Reader(bytes=data)
    reader.preamble()
    W, H, planes = reader.width, reader.height, reader.planes
    check_pixels((W, H), max_pixels, path)
    if reader.bitdepth != 16:
        raise InputError(f"{path}: cannot read image (expected 16-bit samples, got {reader.bitdepth})")
    passes = png_passes(W, H, bool(reader.interlace))
    expected = sum(h * (1 + 2 * planes * w) for *_, w, h in passes)  # each scanline: a filter byte, its samples
    raw = bytearray(inflate_bounded(_idat(reader), expected, path, f"its {W}×{H} header needs"))
    out = np.empty((H, W, planes), np.uint16)
    at = 0
    for x0, y0, dx, dy, w, h in passes:
        line, previous = 2 * planes * w, None
        for j in range(h):
            previous = reader.undo_filter(raw[at], raw[at + 1:at + 1 + line], previous)
            out[y0 + j * dy, x0::dx] = np.frombuffer(previous, ">u2").reshape(w, planes)
            at += 1 + line
    return out
