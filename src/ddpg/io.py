"""Files at the edges: image loading (8/16-bit, grey, RGBA, EXIF orientation), measurements, atomic writes,
input lists, and size handling (centre crop + resize, reflect padding).

Images are (3, H, W) float32 tensors in [0, 1] here; samplers work in [-1, 1]. Every writer goes through
:func:`atomic_write`: a temporary file in the destination folder, flushed to the disk, then ``os.replace`` and
the folder flushed — an interrupted or failed write never leaves a half-written file under the final name, and
a written one survives a power cut. Temporary names carry the writer's pid, so a later run can remove those of
a killed one (:func:`remove_stale_temporaries`); :class:`StagedFiles` records what it publishes first, so a
crash between its renames can be undone (:func:`recover_staged`).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import re
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import png
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from ddpg.checks import DEFAULT_MAX_PIXELS
from ddpg.errors import ImageTooLarge, InputError

log = logging.getLogger("ddpg")

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
MEASUREMENT_SUFFIXES = frozenset({".pt", ".npy"})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_BYTES_PER_PIXEL = 16  # the largest uncompressed sample layout (RGBA, 32 bits per channel)
# Adam7's seven passes: (x0, y0, dx, dy), the first pixel and the steps between pixels
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
# PngImagePlugin's ValueErrors for a zTXt/iTXt/iCCP chunk that inflates past MAX_TEXT_CHUNK, or text chunks past
# MAX_TEXT_MEMORY together
PILLOW_TEXT_LIMITS = ("Decompressed data too large", "Too much memory used in text chunks")
MAX_JSON_BYTES = 1 << 20  # a sidecar is a few kB: a larger JSON file in a user's folder is not read
MAX_JSON_DEPTH = 64  # a sidecar nests 4 levels deep
TEMPORARY_NAME = re.compile(r"\..+\.ddpg-(?P<pid>\d+)-[a-z0-9_]+\.part")  # _temporary's names
PENDING_SUFFIX = ".ddpg-pending"  # StagedFiles' record of a publication under way: .<last name>.ddpg-pending
LOCK_NAME = ".ddpg.lock"

# ---------------------------------------------------------------------------------------------- writing


def _umask() -> int:
    """The process umask, read without changing it where the system says it (Linux), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temporary(path: Path) -> Path:
    """An empty temporary file next to ``path`` (a hidden ``.name.ddpg-PID-xxxx.part``, PID this process's),
    its folder made first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.ddpg-{os.getpid()}-", suffix=".part", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries (after renames), to the disk. A file system that cannot flush
    a folder (EINVAL) is left as it is."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL or not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise
    finally:
        os.close(fd)


def _publish(tmp: Path, path: Path) -> None:
    """Rename a finished temporary file, its data on the disk first, over ``path``, with the mode a new file
    gets under the umask (a temporary file is created 0600)."""
    os.chmod(tmp, 0o666 & ~_umask())
    fsync_path(tmp)
    os.replace(tmp, path)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it over ``path`` (flushed to the
    disk before and after). On any exception (including KeyboardInterrupt) the temporary file is removed and
    ``path`` is left as it was."""
    path = Path(path)
    tmp = _temporary(path)
    try:
        write(tmp)
        _publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


class StagedFiles:
    """Several outputs that appear together: each is written to a temporary file first, and only when all
    are written are they renamed into place (in order, so the last one — a sidecar — marks completion).
    Leaving the block by an exception removes every temporary file and renames nothing. Before the first rename
    a hidden record (:func:`pending_record` of the last file) names every file of the last one's folder with
    its size and sha256, and is removed once all are renamed and flushed: after a crash between the renames,
    :func:`recover_staged` tells these files from anyone else's."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def __enter__(self) -> StagedFiles:
        return self

    def add(self, path: str | Path, write: Callable[[Path], None]) -> None:
        """Write a file under a temporary name now, to be renamed to ``path`` when the block ends."""
        path = Path(path)
        tmp = _temporary(path)
        self._staged.append((tmp, path))
        write(tmp)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self._staged:
                self._commit()
        finally:
            for tmp, _ in self._staged:
                tmp.unlink(missing_ok=True)

    def _commit(self) -> None:
        last = self._staged[-1][1]
        record = pending_record(last)
        if len(self._staged) > 1:
            files = {path.name: _digest(tmp) for tmp, path in self._staged if path.parent == last.parent}
            save_json({"kind": "ddpg-pending", "files": files}, record)
        for tmp, path in self._staged:
            _publish(tmp, path)
        for folder in dict.fromkeys(path.parent for _, path in self._staged):
            fsync_path(folder)
        record.unlink(missing_ok=True)


def pending_record(last: Path) -> Path:
    """The hidden record :class:`StagedFiles` keeps while it renames files whose last one is ``last``."""
    return last.with_name(f".{last.name}{PENDING_SUFFIX}")


def _digest(path: Path) -> dict:
    """{size, sha256} of a file."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
        return {"size": os.fstat(fh.fileno()).st_size, "sha256": sha.hexdigest()}


def _is_file_with(path: Path, digest: object) -> bool:
    """Whether ``path`` is a regular file (not a link) with the size and sha256 of ``digest``."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and isinstance(digest, dict) and info.st_size == digest.get("size") and \
        _digest(path)["sha256"] == digest.get("sha256")


def recover_staged(last: Path) -> None:
    """Undo a :class:`StagedFiles` publication that a crash interrupted (its record still there): when ``last``
    was renamed, every file was and only the record is removed; else the files renamed so far — those with the
    recorded size and sha256, never anyone else's file of the same name — are removed with the record. Call it
    holding the folder's lock (:func:`folder_lock`)."""
    record = pending_record(last)
    if not os.path.isfile(record):
        return
    try:
        files = read_json(record)
    except InputError as exc:
        log.warning("%s; left as it is", exc)
        return
    files = files.get("files") if isinstance(files, dict) else None
    if isinstance(files, dict) and not _is_file_with(last, files.get(last.name)):
        for name, digest in files.items():
            if isinstance(name, str) and name == Path(name).name and _is_file_with(last.parent / name, digest):
                (last.parent / name).unlink()
                log.info("%s: removed (written by a run that stopped before its outputs were complete)",
                         last.parent / name)
    record.unlink()
    fsync_path(last.parent)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files (``.name.ddpg-PID-xxxx.part``) that killed writers left in ``folder``: those
    named as :func:`atomic_write` names them, of a process that no longer runs. Call it holding the folder's
    lock (:func:`folder_lock`). Returns the files removed."""
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            found = TEMPORARY_NAME.fullmatch(entry.name)
            if found and entry.is_file(follow_symlinks=False) and not _running(int(found["pid"])):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    if removed:
        log.info("%s: removed %d temporary files of an earlier run that was killed", folder, len(removed))
    return removed


def _running(pid: int) -> bool:
    """Whether a process ``pid`` runs (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


class FolderBusy(OSError):
    """Another process holds the folder's lock (:func:`folder_lock`); ``holder`` is its pid, if it said."""

    def __init__(self, folder: Path, holder: str):
        self.folder, self.holder = folder, holder
        super().__init__(errno.EWOULDBLOCK, f"{folder}: locked by another process", str(folder))


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock inside the block: an exclusive ``flock`` of the hidden file ``.ddpg.lock`` there
    (holding this pid), taken without waiting (:class:`FolderBusy` when another process holds it) and released,
    the file removed, on leaving. The folder must exist."""
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(fd), os.stat(path)):  # not removed by the holder before we locked it
                break
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise FolderBusy(folder, holder) from None
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def to_uint(img: torch.Tensor, bits: int = 8) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, C) or (H, W) unsigned integers, rounded and clamped."""
    if bits not in (8, 16):
        raise InputError(f"bits must be 8 or 16, got {bits}")
    peak = 2**bits - 1
    arr = (img.detach().float().clamp(0, 1) * peak).round().cpu().numpy()
    arr = arr.astype(np.uint16 if bits == 16 else np.uint8).transpose(1, 2, 0)
    return arr[..., 0] if arr.shape[2] == 1 else arr


def encode_png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (pypng) of (H, W) grey or (H, W, 3) RGB uint16 samples (Pillow writes 16-bit grey only)."""
    H, W = arr.shape[:2]
    buf = io.BytesIO()
    png.Writer(W, H, bitdepth=16, greyscale=arr.ndim == 2).write(buf, np.ascontiguousarray(arr).reshape(H, -1))
    return buf.getvalue()


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


def _finite_or_none(value):
    """``value`` with every NaN or infinite float (at any depth) replaced by None: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def strict_json(data: dict) -> str:
    """``data`` as strict JSON text, as :func:`save_json` writes it: a NaN or infinite float is null (``NaN`` is
    not JSON), other objects their ``str``."""
    return json.dumps(_finite_or_none(data), indent=2, default=str, allow_nan=False) + "\n"


def save_json(data: dict, path: str | Path) -> Path:
    """``data`` as :func:`strict_json`, written atomically."""
    text = strict_json(data)
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


_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # strings (skipped whole) and brackets
_NESTING = {b"[": 1, b"{": 1, b"]": -1, b"}": -1}


def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> object:
    """The value of a JSON file in a user's folder (a sidecar, metadata), read within bounds: InputError naming
    the file when it is not a regular file, is larger than ``max_bytes`` (then it is not read), nests deeper
    than ``max_depth``, or is not JSON."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO named x.json does not block
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise InputError(f"{path}: not read: not a regular file")
            data = fh.read(max_bytes + 1) if info.st_size <= max_bytes else b""
    except OSError as exc:
        raise InputError(f"{path}: not read ({exc.strerror or exc})") from exc
    if info.st_size > max_bytes or len(data) > max_bytes:
        raise InputError(f"{path}: not read: {max(info.st_size, len(data)):,} bytes is more than a ddpg JSON file "
                         f"can be ({max_bytes:,})")
    depth = 0
    for token in _JSON_TOKENS.finditer(data):
        depth += _NESTING.get(token.group(), 0)
        if depth > max_depth:
            raise InputError(f"{path}: not read: nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InputError(f"{path}: not valid JSON ({exc})") from exc


# ---------------------------------------------------------------------------------------------- reading


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file, None for other files."""
    with open(path, "rb") as fh:
        head = fh.read(29)
    if len(head) < 29 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def check_pixels(size: tuple[int, int], max_pixels: int, path: Path) -> None:
    """Refuse an image of ``size`` (W, H) with more than ``max_pixels`` pixels (ImageTooLarge), before it is
    decoded."""
    W, H = size
    if W * H > max_pixels:
        raise _too_many(f"{W}×{H} = {W * H:,}", max_pixels, path)


def _too_many(pixels: str, max_pixels: int, path: Path) -> ImageTooLarge:
    return ImageTooLarge(f"{path}: {pixels} pixels is more than the limit of {max_pixels:,} (max_pixels; a "
                         "decompression bomb, or raise the limit)")


def _max_bytes(max_pixels: int) -> int:
    """The most bytes a file of an image of ``max_pixels`` pixels holds uncompressed, with 1 MiB of metadata."""
    return MAX_BYTES_PER_PIXEL * max_pixels + (1 << 20)


def read_bounded(path: Path, max_pixels: int) -> bytes:
    """The bytes of an image file, refused (ImageTooLarge) when it is larger than an uncompressed image of
    ``max_pixels`` pixels could be. Decoders then read from memory: a chunk length in a damaged header cannot
    make a file read allocate for more bytes than the file holds."""
    size = path.stat().st_size
    if size > _max_bytes(max_pixels):
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


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(H, W) in pixels from an image file's header (nothing decoded; EXIF orientation not applied), or None when
    Pillow cannot read one (loading the file then names the problem)."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception:  # Pillow raises many types on damaged or hostile files
        return None


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
        if _png_header(path) in {(16, c) for c in (2, 4, 6)}:
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
        if inflated > _max_bytes(max_pixels):
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


def collect_inputs(paths: Iterable[str | Path], suffixes: Iterable[str] = IMAGE_SUFFIXES
                   ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files from files and folders (a folder: its files with ``suffixes``, sorted; not recursive; hidden files
    left out). When a folder holds a measurement and images of one stem (``a.pt`` and ``a.png``, as ``ddpg
    degrade`` writes), the measurement is taken (.pt before .npy); images of one stem (``a.png``, ``a.jpg``) are
    all returned, for the caller to tell apart. Returns (files, problems) with a reason per unusable path."""
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
            by_stem: dict[str, list[Path]] = {}
            for q in sorted(entries, key=lambda q: (q.stem, rank.get(q.suffix.lower(), 2), q.name)):
                kept = by_stem.setdefault(q.stem, [])
                if not kept or (q.suffix.lower() not in rank and kept[0].suffix.lower() not in rank):
                    kept.append(q)
            if not by_stem:
                problems.append((p, f"folder holds no input files ({', '.join(sorted(suffixes))})"))
            files.extend(q for s in sorted(by_stem) for q in by_stem[s])
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
