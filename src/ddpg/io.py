"""Files at the edges: image loading (8/16-bit, grey, RGBA, EXIF orientation), measurements, atomic writes,
input lists, and size handling (centre crop + resize, reflect padding).

Images are (3, H, W) float32 tensors in [0, 1] here; samplers work in [-1, 1]. Every writer goes through
:func:`atomic_write`: a temporary file in the destination folder, then ``os.replace`` — an interrupted or
failed write never leaves a half-written file under the final name.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from ddpg.errors import InputError

log = logging.getLogger("ddpg")

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
MEASUREMENT_SUFFIXES = frozenset({".pt", ".npy"})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type → samples per pixel

# ---------------------------------------------------------------------------------------------- writing


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it over ``path``. On any
    exception (including KeyboardInterrupt) the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_atomic = atomic_write  # the name other modules imported first


class StagedFiles:
    """Several outputs that appear together: each is written to a temporary file first, and only when all
    are written are they renamed into place (in order, so the last one — a sidecar — marks completion).
    Leaving the block by an exception removes every temporary file and renames nothing."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def __enter__(self) -> StagedFiles:
        return self

    def add(self, path: str | Path, write: Callable[[Path], None]) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
        self._staged.append((Path(tmp), path))
        write(Path(tmp))

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                for tmp, path in self._staged:
                    os.replace(tmp, path)
        finally:
            for tmp, _ in self._staged:
                tmp.unlink(missing_ok=True)


def to_uint(img: torch.Tensor, bits: int = 8) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, C) or (H, W) unsigned integers, rounded and clamped."""
    if bits not in (8, 16):
        raise InputError(f"bits must be 8 or 16, got {bits}")
    peak = 2**bits - 1
    arr = (img.detach().float().clamp(0, 1) * peak).round().cpu().numpy()
    arr = arr.astype(np.uint16 if bits == 16 else np.uint8).transpose(1, 2, 0)
    return arr[..., 0] if arr.shape[2] == 1 else arr


def encode_png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG of (H, W) grey or (H, W, 3) RGB uint16 samples (Pillow writes 16-bit grey only)."""
    arr = np.ascontiguousarray(arr, dtype=">u2")
    H, W = arr.shape[:2]
    colour = 0 if arr.ndim == 2 else 2
    rows = arr.reshape(H, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((H, 1), np.uint8), rows], axis=1).tobytes()  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", W, H, 16, colour, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


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


def save_json(data: dict, path: str | Path) -> Path:
    text = json.dumps(data, indent=2, default=str) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


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


# ---------------------------------------------------------------------------------------------- reading


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file, None for other files."""
    with open(path, "rb") as fh:
        head = fh.read(29)
    if len(head) < 29 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def decode_png16(data: bytes, path: Path) -> np.ndarray:
    """(H, W, C) uint16 samples of a non-interlaced 16-bit PNG (Pillow reduces 16-bit RGB to 8 bits)."""
    pos, idat, header = len(PNG_SIGNATURE), [], None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        raise InputError(f"{path}: cannot read image (PNG without IHDR or IDAT)")
    W, H, depth, colour, _, _, interlace = header
    if depth != 16 or colour not in PNG_CHANNELS or interlace:
        raise InputError(f"{path}: unsupported PNG layout (depth {depth}, colour type {colour}, "
                         f"interlace {interlace})")
    bpp = 2 * PNG_CHANNELS[colour]
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8)
    except zlib.error as exc:
        raise InputError(f"{path}: cannot read image (corrupt PNG data: {exc})") from exc
    stride = W * bpp
    if raw.size != H * (stride + 1):
        raise InputError(f"{path}: cannot read image (truncated PNG data)")
    rows = raw.reshape(H, stride + 1)
    out = np.zeros((H, stride), np.int64)
    prev = np.zeros(stride, np.int64)
    for r in range(H):
        kind, line = rows[r, 0], rows[r, 1:].astype(np.int64)
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) % 256
        elif kind == 1:  # Sub: a running sum per byte lane
            cur = np.cumsum(line.reshape(W, bpp), axis=0).reshape(-1) % 256
        elif kind in (3, 4):  # Average / Paeth depend on the reconstructed left neighbour: pixel by pixel
            cur = np.zeros(stride, np.int64)
            left = np.zeros(bpp, np.int64)
            up_left = np.zeros(bpp, np.int64)
            for i in range(W):
                sl = slice(i * bpp, (i + 1) * bpp)
                up = prev[sl]
                pred = (left + up) // 2 if kind == 3 else _paeth(left, up, up_left)
                left = (line[sl] + pred) % 256
                cur[sl] = left
                up_left = up
        else:
            raise InputError(f"{path}: cannot read image (PNG filter type {kind})")
        out[r] = prev = cur
    samples = out.astype(np.uint8).reshape(H, W * bpp // 2, 2)
    return (samples[..., 0].astype(np.uint16) << 8 | samples[..., 1]).reshape(H, W, bpp // 2)


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


def load_image(path: str | Path) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]: EXIF orientation applied, grey expanded to RGB, alpha dropped with a
    warning, 16-bit PNGs (grey and RGB) kept at full precision."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image")
    try:
        if _png_header(path) in {(16, c) for c in (2, 4, 6)}:
            arr = decode_png16(path.read_bytes(), path).astype(np.float64) / 65535.0
            with Image.open(path) as im:
                orientation = im.getexif().get(0x0112, 1)
            return _tensor(_to_rgb(_apply_orientation(arr, orientation), path))
        with Image.open(path) as im:
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
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except PermissionError as exc:
        raise InputError(f"{path}: permission denied") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from exc
    return _tensor(_to_rgb(arr, path))


def _tensor(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1).contiguous()


def load_measurement(path: str | Path) -> torch.Tensor:
    """An exact float measurement (C, h, w) in the [-1, 1] scale from ``.pt`` or ``.npy`` (as written by
    ``ddpg degrade``); a leading batch dimension of 1 is dropped."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            y = torch.from_numpy(np.load(path, allow_pickle=False).astype(np.float32))
        else:
            y = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except Exception as exc:  # torch and NumPy raise many types for damaged or unsafe files
        raise InputError(f"{path}: cannot read measurement ({str(exc).splitlines()[0] if str(exc) else exc!r})") \
            from exc
    if not isinstance(y, torch.Tensor):
        raise InputError(f"{path}: expected a tensor, got {type(y).__name__}")
    if y.ndim == 4 and y.shape[0] == 1:
        y = y[0]
    if y.ndim != 3 or y.shape[0] not in (1, 3) or not torch.isfinite(y).all():
        raise InputError(f"{path}: expected a finite (1 or 3, h, w) measurement, got shape {tuple(y.shape)}")
    return y.float()


def collect_inputs(paths: Iterable[str | Path], suffixes: Iterable[str] = IMAGE_SUFFIXES
                   ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files from files and folders (a folder: its files with ``suffixes``, sorted; not recursive).
    When a folder holds several files of one stem (``a.png`` and ``a.pt``), the first suffix in the order
    .pt, .npy, then images is taken. Returns (files, problems) with a reason per unusable path."""
    suffixes = {s.lower() for s in suffixes}
    rank = {".pt": 0, ".npy": 1}
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            try:
                entries = [q for q in p.iterdir() if q.suffix.lower() in suffixes and q.is_file()
                           and not q.name.startswith(".")]
            except OSError as exc:
                problems.append((p, f"cannot list folder ({exc.strerror or exc})"))
                continue
            best: dict[str, Path] = {}
            for q in sorted(entries, key=lambda q: (q.stem, rank.get(q.suffix.lower(), 2), q.name)):
                best.setdefault(q.stem, q)
            if not best:
                problems.append((p, f"folder holds no input files ({', '.join(sorted(suffixes))})"))
            files.extend(best[s] for s in sorted(best))
        elif p.is_file():
            files.append(p)
        elif p.exists():
            problems.append((p, "not a regular file or folder"))
        else:
            problems.append((p, "no such file or folder"))
    return files, problems


# ---------------------------------------------------------------------------------------------- sizes


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
