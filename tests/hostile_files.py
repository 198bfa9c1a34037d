"""Hostile files for the loaders' tests: PNGs whose compressed data inflates past what their header
needs, PNGs and TIFFs Pillow itself refuses, torch archives whose tensors claim more values than they hold; and
:func:`probe`, which loads files in a fresh Python process and reports what each gave and how far the process's
peak memory (RSS) rose over its memory before the first of them."""

from __future__ import annotations

import collections
import functools
import io
import json
import os
import pickle
import random
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MB = 1 << 20


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(width: int, height: int, depth: int, colour: int, idat: bytes, *, interlace: int = 0,
             before: bytes = b"", after: bytes = b"") -> bytes:
    """A PNG of the given header whose IDAT is ``idat`` (zlib data), with chunks ``before`` and ``after`` it."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return (PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + before + png_chunk(b"IDAT", idat) + after
            + png_chunk(b"IEND", b""))


@functools.cache
def zlib_zeros(nbytes: int) -> bytes:
    """zlib data that inflates to ``nbytes`` zero bytes (about 1000 times smaller), compressed a MiB at a time."""
    z = zlib.compressobj(9)
    parts = [z.compress(bytes(min(MB, nbytes - start))) for start in range(0, nbytes, MB)]
    return b"".join(parts) + z.flush()


def png16_bomb(inflated: int, interlace: int = 0) -> bytes:
    """A 64×64 16-bit RGB PNG whose IDAT inflates to ``inflated`` bytes (its header needs 24,640)."""
    return png_file(64, 64, 16, 2, zlib_zeros(inflated), interlace=interlace)


def text_bomb(kind: bytes, inflated: int = 64 * MB, after_idat: bool = False) -> bytes:
    """A 4×4 RGB PNG with a zTXt, iTXt or iCCP chunk whose compressed text or profile inflates to ``inflated``
    bytes, before or after its IDAT."""
    head = {b"zTXt": b"k\0\0", b"iTXt": b"k\0\1\0\0\0", b"iCCP": b"k\0\0"}[kind]
    chunk = png_chunk(kind, head + zlib_zeros(inflated))
    idat = zlib.compress(bytes(4 * 13))
    return png_file(4, 4, 8, 2, idat, **({"after": chunk} if after_idat else {"before": chunk}))


def many_text_chunks(count: int = 80) -> bytes:
    """A 4×4 RGB PNG with ``count`` zTXt chunks of 1 MB of text each (over Pillow's MAX_TEXT_MEMORY together)."""
    text = b"".join(png_chunk(b"zTXt", b"k%d\0\0" % i + zlib_zeros(1_000_000)) for i in range(count))
    return png_file(4, 4, 8, 2, zlib.compress(bytes(4 * 13)), before=text)


def huge_palette_png(side: int = 20000) -> bytes:
    """A palette PNG whose header claims side × side pixels (Pillow's own limit is about 179 M)."""
    return png_file(side, side, 8, 3, zlib.compress(b"\0"), before=png_chunk(b"PLTE", bytes(3)))


def huge_tiff(side: int = 20000) -> bytes:
    """A TIFF whose header claims side × side pixels (its strip holds 4×4)."""
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="TIFF")
    b = bytearray(buf.getvalue())
    ifd = int.from_bytes(b[4:8], "little")
    for k in range(struct.unpack("<H", b[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack("<HH", b[entry:entry + 4])
        if tag in (256, 257):
            b[entry + 8:entry + 12] = struct.pack("<I", side) if kind == 4 else struct.pack("<HH", side, 0)
    return bytes(b)


class _Storage:
    """Stands for the one float storage of a crafted torch archive (pickled as torch pickles storages)."""


class _Tensor:
    def __init__(self, size: tuple, stride: tuple):
        self.size, self.stride = size, stride

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (_Storage(), 0, self.size, self.stride, False,
                                                  collections.OrderedDict())


def crafted_pt(size: tuple, stride: tuple, numel: int, compress: int = zipfile.ZIP_STORED) -> bytes:
    """A torch.save archive whose tensor claims ``size`` and ``stride`` over a float storage of ``numel`` zeros,
    its entries written with ``compress`` (deflated zeros make a small file of a large storage)."""
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if isinstance(obj, _Storage) else None

    pkl = io.BytesIO()
    Pickler(pkl, protocol=2).dump(_Tensor(size, stride))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compress) as archive:
        archive.writestr("archive/data.pkl", pkl.getvalue())
        archive.writestr("archive/byteorder", "little")
        with archive.open("archive/data/0", "w") as storage:
            for start in range(0, 4 * numel, MB):
                storage.write(bytes(min(MB, 4 * numel - start)))
        archive.writestr("archive/version", "3\n")
    return out.getvalue()


def saved_pt(value, legacy: bool = False) -> bytes:
    """``torch.save(value)`` as bytes, in the zip format or the legacy (pre-1.6) one."""
    buf = io.BytesIO()
    torch.save(value, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def valid_png16(width: int = 8, height: int = 6, planes: int = 3, interlace: bool = False, seed: int = 0
                ) -> tuple[bytes, np.ndarray]:
    """A 16-bit PNG (pypng) of random samples with ``planes`` 2 (grey + alpha), 3 (RGB) or 4 (RGBA), and the
    (H, W, planes) uint16 samples it holds."""
    import png

    arr = np.random.default_rng(seed).integers(0, 65536, (height, width, planes), dtype=np.uint16)
    buf = io.BytesIO()
    png.Writer(width, height, bitdepth=16, greyscale=planes < 3, alpha=planes in (2, 4),
               interlace=interlace).write(buf, arr.reshape(height, -1))
    return buf.getvalue(), arr


def inflated_idat(png: bytes) -> bytes:
    """The inflated pixel data of a PNG with one IDAT chunk."""
    at = png.index(b"IDAT")
    return zlib.decompress(png[at + 4:at + 4 + int.from_bytes(png[at - 4:at], "big")])


def mutated(data: bytes, rng: random.Random) -> bytes:
    """``data`` with up to 4 bytes flipped, then cut or extended (zeros) by up to 8 bytes."""
    b = bytearray(data)
    for _ in range(rng.randint(0, 4)):
        b[rng.randrange(len(b))] ^= rng.randint(1, 255)
    extra = rng.randint(-8, 8)
    return bytes(b[:max(len(b) + extra, 0)] if extra < 0 else b + bytes(extra))


def mutated_png16(rng: random.Random) -> tuple[bytes, tuple[int, int]]:
    """A random 16-bit PNG of up to 20×20 pixels (straight or Adam7; grey + alpha, RGB or RGBA) with its
    inflated scanlines (filter bytes included) or its compressed stream :func:`mutated`, its CRCs valid so that
    a reader gets to the pixel data; and the (H, W) its header claims."""
    width, height, planes, interlace = rng.randint(1, 20), rng.randint(1, 20), rng.choice([2, 3, 4]), rng.random() < .5
    raw = inflated_idat(valid_png16(width, height, planes, interlace, seed=rng.randrange(2**32))[0])
    stream = zlib.compress(mutated(raw, rng)) if rng.random() < 0.5 else mutated(zlib.compress(raw), rng)
    return png_file(width, height, 16, {2: 4, 3: 2, 4: 6}[planes], stream, interlace=int(interlace)), (height, width)


def mutated_pt(rng: random.Random) -> bytes:
    """A valid (3, 5, 4) float32 ``.pt`` measurement, zip or legacy format, :func:`mutated`: the whole file, or
    one entry of the zip (its pickle, storage, byte order, version, ...) written again with valid CRCs, stored
    or deflated."""
    values = np.random.default_rng(rng.randrange(2**32)).standard_normal((3, 5, 4), dtype=np.float32)
    good = saved_pt(torch.from_numpy(values), legacy=rng.random() < 0.25)
    if not good.startswith(b"PK") or rng.random() < 0.3:
        return mutated(good, rng)
    with zipfile.ZipFile(io.BytesIO(good)) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    name = rng.choice(sorted(entries))
    entries[name] = mutated(entries[name], rng)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])) as archive:
        for key, value in entries.items():
            archive.writestr(key, value)
    return out.getvalue()


PROBE = r"""
import json, sys
from ddpg import io
from ddpg.errors import ImageTooLarge
from ddpg.operators.factory import load_array


def memory(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field)) / 1024


def load(kind, path, max_pixels):
    if kind == "image":
        return list(io.load_image(path, max_pixels).shape)
    if kind == "header":
        with io.open_image(path, max_pixels) as im:
            return list(im.size)
    if kind == "measurement":
        return list(io.load_measurement(path, max_pixels).shape)
    return list(load_array(path, "mask").shape)


def too_large(exc):
    while exc is not None and not isinstance(exc, ImageTooLarge):
        exc = exc.__cause__
    return exc is not None


kind, max_pixels, warm, *paths = sys.argv[1:]
load(kind, warm, int(max_pixels))  # libraries, plugins and caches in place before the baseline
before = memory("VmRSS:")
results = {}
for path in paths:
    try:
        results[path] = {"loaded": load(kind, path, int(max_pixels))}
    except Exception as exc:
        results[path] = {"error": type(exc).__name__, "too_large": too_large(exc), "message": str(exc)}
print(json.dumps({"results": results, "grew_mb": memory("VmHWM:") - before}))
"""


def probe(kind: str, paths: list[Path], warm: Path, max_pixels: int = 2**25) -> tuple[dict, float]:
    """Load ``paths`` in a fresh process with ``kind`` "image" (load_image), "header" (open_image, as ``ddpg
    serve`` checks an upload), "measurement" (load_measurement) or "mask" (an inpainting mask's loader), after
    the valid file ``warm``. Returns ({path: {"loaded": shape} or {"error": class name, "too_large": whether
    ImageTooLarge is it or its cause, "message"}}, MB the peak RSS rose above the RSS before the first path)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE, kind, str(max_pixels), str(warm), *map(str, paths)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.splitlines()[-1])
    return {Path(p): r for p, r in report["results"].items()}, report["grew_mb"]
