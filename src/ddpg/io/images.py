"""Image files: (3, H, W) float32 tensors in [0, 1] here (samplers work in [-1, 1]). Loading 8/16-bit, grey,
RGBA and EXIF-oriented images within the pixel limit; saving 8- or 16-bit PNGs atomically."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ddpg.checks import DEFAULT_MAX_PIXELS
from ddpg.errors import InputError
from ddpg.io.atomic import atomic_write
from ddpg.io.bounded import decoder_error, open_image, read_bounded
from ddpg.io.png16 import decode_png16, encode_png16, png_header

log = logging.getLogger("ddpg")


def to_uint(img: torch.Tensor, bits: int = 8) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, C) or (H, W) unsigned integers, rounded and clamped."""
    if bits not in (8, 16):
        raise InputError(f"bits must be 8 or 16, got {bits}")
    peak = 2**bits - 1
    arr = (img.detach().float().clamp(0, 1) * peak).round().cpu().numpy()
    arr = arr.astype(np.uint16 if bits == 16 else np.uint8).transpose(1, 2, 0)
    return arr[..., 0] if arr.shape[2] == 1 else arr


def save_image(img: torch.Tensor, path: str | Path, bits: int = 8) -> Path:
    """Save (C, H, W) in [0, 1] (C = 1 or 3) as an 8- or 16-bit PNG, atomically."""
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise InputError(f"{path}: expected a (1 or 3, H, W) image, got {tuple(img.shape)}")
    arr = to_uint(img, bits)
    if bits == 16:
        data = encode_png16(arr)
        return atomic_write(path, lambda tmp: tmp.write_bytes(data))
    pil = Image.fromarray(arr)
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(H, W) in pixels from an image file's header (nothing decoded; EXIF orientation not applied), or None when
    Pillow cannot read one (loading the file then names the problem)."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception:  # Pillow raises many types on damaged or hostile files
        return None


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """The EXIF orientation transform (1–8) of an (H, W, C) array, as ``ImageOps.exif_transpose``."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 1)[::-1],
           8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def _to_rgb(arr: np.ndarray, path: Path) -> np.ndarray:
    """(H, W, C) float in [0, 1] with C ∈ {1, 2, 3, 4} → (H, W, 3); alpha is dropped with a warning."""
    if arr.shape[2] in (2, 4):
        log.warning("%s: alpha channel ignored (colours kept as stored, not composited)", path)
        arr = arr[..., :-1]
    return arr.repeat(3, axis=2) if arr.shape[2] == 1 else arr


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]: EXIF orientation applied, grey expanded to RGB, alpha dropped with a
    warning, 16-bit PNGs (grey and RGB) kept at full precision. Every decoder reads the header first and
    refuses more than ``max_pixels`` pixels; whatever a decoder raises on a damaged or hostile file (and a
    MemoryError) becomes an InputError naming the file, and every refusal of its size (the pixel limit, a
    decompression bomb) an ImageTooLarge (:func:`decoder_error`)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image")
    try:
        if png_header(path) in {(16, c) for c in (2, 4, 6)}:
            arr = decode_png16(read_bounded(path, max_pixels), path, max_pixels).astype(np.float64) / 65535.0
            with open_image(path, max_pixels) as im:
                orientation = im.getexif().get(0x0112, 1)
            return _tensor(_to_rgb(_apply_orientation(arr, orientation), path))
        with open_image(path, max_pixels) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.clip(np.asarray(im, dtype=np.float64) / 65535.0, 0, 1)[..., None]
            elif im.mode == "F":
                arr = np.clip(np.asarray(im, dtype=np.float64), 0, 1)[..., None]
            else:
                has_alpha = "A" in im.getbands() or (im.mode == "P" and "transparency" in im.info)
                target = ("LA" if im.mode in ("L", "LA") else "RGBA") if has_alpha else \
                    ("L" if im.mode in ("L", "1") else "RGB")
                arr = np.asarray(im.convert(target), dtype=np.float64) / 255.0
                arr = arr[..., None] if arr.ndim == 2 else arr
    except InputError:
        raise
    except Exception as exc:  # decoders raise many types (struct.error, IndexError, ...) on damaged files
        raise decoder_error(exc, path, max_pixels) from exc
    return _tensor(_to_rgb(arr, path))


def _tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1).contiguous()
