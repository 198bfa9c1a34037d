"""Reading image files within bounds: the pixel limit checked from a header before decoding, files no larger
than such an image can be, zlib streams inflated no further than needed, Pillow opened lazily, and every
decoder's failure mapped to an InputError naming the file (ImageTooLarge for a refusal of its size)."""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import png
from PIL import Image, UnidentifiedImageError

from ddpg.checks import DEFAULT_MAX_PIXELS
from ddpg.errors import ImageTooLarge, InputError

MAX_BYTES_PER_PIXEL = 16  # the largest uncompressed sample layout (RGBA, 32 bits per channel)
# PngImagePlugin's ValueErrors for a zTXt/iTXt/iCCP chunk that inflates past MAX_TEXT_CHUNK, or text chunks past
# MAX_TEXT_MEMORY together
PILLOW_TEXT_LIMITS = ("Decompressed data too large", "Too much memory used in text chunks")


def check_pixels(size: tuple[int, int], max_pixels: int, path: Path) -> None:
    """Refuse an image of ``size`` (W, H) with more than ``max_pixels`` pixels (ImageTooLarge), before it is
    decoded."""
    W, H = size
    if W * H > max_pixels:
        raise _too_many(f"{W}×{H} = {W * H:,}", max_pixels, path)


def _too_many(pixels: str, max_pixels: int, path: Path) -> ImageTooLarge:
    return ImageTooLarge(f"{path}: {pixels} pixels is more than the limit of {max_pixels:,} (max_pixels; a "
                         "decompression bomb, or raise the limit)")


def max_file_bytes(max_pixels: int) -> int:
    """The most bytes a file of an image of ``max_pixels`` pixels holds uncompressed, with 1 MiB of metadata."""
    return MAX_BYTES_PER_PIXEL * max_pixels + (1 << 20)


def read_bounded(path: Path, max_pixels: int) -> bytes:
    """The bytes of an image file, refused (ImageTooLarge) when it is larger than an uncompressed image of
    ``max_pixels`` pixels could be. Decoders then read from memory: a chunk length in a damaged header cannot
    make a file read allocate for more bytes than the file holds."""
    size = path.stat().st_size
    if size > max_file_bytes(max_pixels):
        raise ImageTooLarge(f"{path}: a file of {size:,} bytes is larger than any image of {max_pixels:,} pixels "
                            "(max_pixels)")
    return path.read_bytes()


def decoder_error(exc: Exception, path: Path, max_pixels: int) -> InputError:
    """The InputError naming ``path`` for what a decoder raised on it: ImageTooLarge for the decompression bombs
    Pillow refuses (more pixels than its limit; text or a colour profile inflating past its limits), else why the
    file cannot be read (a MemoryError included)."""
    if isinstance(exc, Image.DecompressionBombError):
        found = re.search(r"\((\d+) pixels\)", str(exc))
        if found and int(found.group(1)) > max_pixels:
            return _too_many(f"{int(found.group(1)):,}", max_pixels, path)
        return ImageTooLarge(f"{path}: more pixels than Pillow's decompression-bomb limit ({exc})")
    if isinstance(exc, ValueError) and str(exc).startswith(PILLOW_TEXT_LIMITS):
        return ImageTooLarge(f"{path}: its compressed text or colour profile inflates past Pillow's limit ({exc}; a "
                             "decompression bomb)")
    if isinstance(exc, (FileNotFoundError, PermissionError)):
        return InputError(f"{path}: {'file not found' if isinstance(exc, FileNotFoundError) else 'permission denied'}")
    if isinstance(exc, MemoryError):
        return InputError(f"{path}: cannot read image (not enough memory to decode it)")
    if isinstance(exc, (UnidentifiedImageError, OSError, ValueError, SyntaxError, png.Error)):
        return InputError(f"{path}: cannot read image ({exc})")
    return InputError(f"{path}: cannot read image ({type(exc).__name__}: {exc})")


@contextmanager
def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Image.Image]:
    """A Pillow image opened lazily (header only) and refused, before any pixel is decoded, when it has more
    than ``max_pixels`` pixels. Pillow's own bomb check (2 × ``Image.MAX_IMAGE_PIXELS``) still applies first;
    an image it refuses is reported against ``max_pixels`` when that is the lower limit. The file is read into
    memory first (:func:`read_bounded`). Whatever opening it raises is an InputError naming the file
    (:func:`decoder_error`): ImageTooLarge for every refusal of its size."""
    path = Path(path)
    try:
        im = Image.open(io.BytesIO(read_bounded(path, max_pixels)))
    except InputError:
        raise
    except Exception as exc:  # Pillow raises many types on damaged or hostile files
        raise decoder_error(exc, path, max_pixels) from exc
    with im:
        check_pixels(im.size, max_pixels, path)
        yield im


def inflate_bounded(data: bytes, expected: int, path: Path, needs: str) -> bytes:
    """The zlib stream ``data`` inflated, when it holds exactly ``expected`` bytes (``needs`` says what needs
    them). At most one byte past them is inflated: more is refused (ImageTooLarge, a decompression bomb), fewer
    is a damaged file (InputError)."""
    out = zlib.decompressobj().decompress(data, expected + 1)
    if len(out) > expected:
        raise ImageTooLarge(f"{path}: its compressed pixel data inflates to more than the {expected:,} bytes "
                            f"{needs} (a decompression bomb)")
    if len(out) < expected:
        raise InputError(f"{path}: cannot read image (its pixel data is {len(out):,} bytes, not the "
                         f"{expected:,} {needs})")
    return out
