"""Measurements: the exact float observation (C, h, w) in the [-1, 1] scale as ``.pt`` (torch) or ``.npy``
(NumPy), saved atomically and loaded within the pixel limit."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from ddpg.checks import DEFAULT_MAX_PIXELS
from ddpg.errors import ImageTooLarge, InputError
from ddpg.io.atomic import atomic_write
from ddpg.io.bounded import max_file_bytes, read_bounded


def save_measurement(y: torch.Tensor, path: str | Path, fmt: str | None = None) -> Path:
    """The exact float measurement (C, h, w) in the [-1, 1] scale as ``fmt`` "pt" (torch) or "npy" (NumPy);
    ``fmt`` defaults to the suffix of ``path``."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".")
    data = y.detach().float().cpu()
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, data.numpy(), allow_pickle=False)
        return atomic_write(path, lambda tmp: tmp.write_bytes(buf.getvalue()))
    if fmt != "pt":
        raise InputError(f"{path}: a measurement is saved as .pt or .npy, not {fmt!r}")
    return atomic_write(path, lambda tmp: torch.save(data, tmp))


def _check_values(shape: tuple[int, ...], max_values: int, path: Path) -> None:
    """Refuse an array of ``shape`` with more than ``max_values`` values (ImageTooLarge), before it is allocated
    or touched."""
    if math.prod(shape) > max_values:
        raise ImageTooLarge(f"{path}: an array of shape {tuple(shape)} is more than the limit of {max_values:,} "
                            "values (max_pixels)")


def load_npy(path: Path, max_values: int) -> np.ndarray:
    """An ``.npy`` array (no pickles), refused when its header claims more than ``max_values`` values, before
    the array is allocated."""
    data = io.BytesIO(read_bounded(path, max_values))
    fmt = np.lib.format
    read_header = fmt.read_array_header_1_0 if fmt.read_magic(data) == (1, 0) else fmt.read_array_header_2_0
    shape, _, _ = read_header(data)
    _check_values(shape, max_values, path)
    data.seek(0)
    return np.load(data, allow_pickle=False)


def load_pt(path: Path, max_pixels: int) -> object:
    """What a ``torch.save`` file holds, read by ``torch.load(weights_only=True)`` from memory after
    :func:`read_bounded`. Torch's zip format may deflate its entries: an archive whose entries would inflate
    past what a file of ``max_pixels`` pixels holds is refused from its directory before torch reads it
    (ImageTooLarge). Tensors come back as saved, possibly views (an expanded one has stride 0) claiming far more
    values than their storage holds: check a shape before touching the values."""
    data = read_bounded(path, max_pixels)
    if data.startswith(b"PK\x03\x04"):  # torch's zip format (the legacy one is a stream of pickles)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            inflated = sum(entry.file_size for entry in archive.infolist())
        if inflated > max_file_bytes(max_pixels):
            raise ImageTooLarge(f"{path}: its archive inflates to {inflated:,} bytes, more than any measurement of "
                                f"{max_pixels:,} pixels holds (max_pixels; a zip bomb)")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_measurement(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """An exact float measurement (C, h, w) in the [-1, 1] scale from ``.pt`` or ``.npy`` (as written by
    ``ddpg degrade``), float32 and contiguous; a leading batch dimension of 1 is dropped. Refused as
    ImageTooLarge: a file larger than ``max_pixels`` pixels can be, a torch archive that inflates past that, and
    a shape of more than 3 × ``max_pixels`` values (an ``.npy`` header's before its array is allocated, a
    tensor's — an expanded view's too — before its values are touched)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            y = torch.from_numpy(load_npy(path, 3 * max_pixels).astype(np.float32))
        else:
            y = load_pt(path, max_pixels)
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except Exception as exc:  # torch and NumPy raise many types for damaged or unsafe files
        raise InputError(f"{path}: cannot read measurement ({str(exc).splitlines()[0] if str(exc) else exc!r})") \
            from exc
    if not isinstance(y, torch.Tensor):
        raise InputError(f"{path}: expected a tensor, got {type(y).__name__}")
    _check_values(y.shape, 3 * max_pixels, path)
    if y.layout != torch.strided or not y.is_floating_point():
        raise InputError(f"{path}: expected a floating-point tensor, got {y.dtype} ({y.layout})")
    if y.ndim == 4 and y.shape[0] == 1:
        y = y[0]
    if y.ndim != 3 or y.shape[0] not in (1, 3) or not torch.isfinite(y).all():
        raise InputError(f"{path}: expected a finite (1 or 3, h, w) measurement, got shape {tuple(y.shape)}")
    return y.float().contiguous()
