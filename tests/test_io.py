"""Image files: 8/16-bit PNG (the 16-bit codec, pypng, against an independent filtered encoder), grey, RGBA, EXIF,
corrupt files, atomic and staged writes, input collection, padding and resizing."""

import errno
import logging
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import ddpg.io as dio
from ddpg.errors import InputError
from ddpg.io import (
    center_crop_resize,
    collect_inputs,
    load_image,
    load_measurement,
    pad_bottom_right,
    padded_size,
    save_image,
    save_measurement,
)


def filtered_png16(arr: np.ndarray) -> bytes:
    """A 16-bit RGB PNG whose rows use filter types 0–4 in turn (written independently of ddpg.io)."""
    H, W, C = arr.shape
    data = arr.astype(">u2").reshape(H, W * C).view(np.uint8).astype(np.int64)
    bpp = 2 * C
    raw = b""
    prev = np.zeros(W * bpp, np.int64)
    for r in range(H):
        cur, kind = data[r], r % 5
        left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        if kind == 0:
            pred = np.zeros_like(cur)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = prev
        elif kind == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - up_left
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - up_left)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, up_left))
        raw += bytes([kind]) + ((cur - pred) % 256).astype(np.uint8).tobytes()
        prev = cur

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16bit_rgb_png_is_read_at_full_precision(tmp_path):
    arr = np.random.default_rng(0).integers(0, 65536, (10, 7, 3), dtype=np.uint16)
    (tmp_path / "f.png").write_bytes(filtered_png16(arr))  # all five PNG filter types
    img = load_image(tmp_path / "f.png")
    assert torch.equal((img * 65535).round().to(torch.int64),
                       torch.from_numpy(arr.astype(np.int64)).permute(2, 0, 1))
    # ddpg writes 16-bit RGB itself (Pillow cannot) and reads it back exactly
    save_image(img, tmp_path / "g.png", bits=16)
    assert torch.equal(load_image(tmp_path / "g.png"), img)
    # Pillow agrees on the 8 most significant bits
    with Image.open(tmp_path / "g.png") as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), (arr >> 8).astype(np.uint8))


def test_8bit_grey_16bit_grey_and_rgba(tmp_path, caplog):
    rgb = np.random.default_rng(0).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert torch.equal(load_image(tmp_path / "a.png"), torch.tensor(rgb / 255.0).permute(2, 0, 1).float())
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    grey = load_image(tmp_path / "g.png")
    assert grey.shape == (3, 8, 6) and torch.equal(grey[0], grey[2])
    Image.fromarray(np.full((4, 4), 40000, dtype=np.uint16)).save(tmp_path / "d.png")
    assert torch.allclose(load_image(tmp_path / "d.png"), torch.full((3, 4, 4), 40000 / 65535))
    Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(tmp_path / "rgba.png")
    with caplog.at_level(logging.WARNING, logger="ddpg"):
        out = load_image(tmp_path / "rgba.png")
    assert torch.equal(out, load_image(tmp_path / "a.png"))
    assert "rgba.png: alpha channel ignored" in caplog.text


def test_exif_orientation_is_applied(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    im.save(tmp_path / "r.png", exif=exif)
    out = load_image(tmp_path / "r.png")
    assert torch.equal(out, torch.tensor(np.rot90(rgb, -1) / 255.0).permute(2, 0, 1).float())


def test_corrupt_missing_and_folder_inputs(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="bad.png: cannot read image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(InputError, match="nope.png: file not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="is a folder"):
        load_image(tmp_path)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(InputError, match="bad.pt: cannot read measurement"):
        load_measurement(tmp_path / "bad.pt")


def test_measurements_round_trip(tmp_path):
    y = torch.randn(1, 8, 8) * 2  # unclipped values outside [-1, 1] are kept
    save_measurement(y, tmp_path / "y.pt")
    save_measurement(y, tmp_path / "y.npy")
    assert torch.equal(load_measurement(tmp_path / "y.pt"), y)
    assert torch.equal(load_measurement(tmp_path / "y.npy"), y)


# atomic and staged writes: tests/test_atomic_writes.py


def test_collect_inputs(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    for name in ("b.png", "a.png", "a.pt", "notes.txt"):
        (tmp_path / "d" / name).write_bytes(b"x")
    files, problems = collect_inputs([tmp_path / "d", tmp_path / "missing"])
    assert [f.name for f in files] == ["a.png", "b.png"]
    assert problems == [(tmp_path / "missing", "no such file or folder")]
    files, _ = collect_inputs([tmp_path / "d"], dio.IMAGE_SUFFIXES | dio.MEASUREMENT_SUFFIXES)
    assert [f.name for f in files] == ["a.pt", "b.png"]  # the exact measurement wins over its PNG
    (tmp_path / "locked").mkdir()
    real = type(tmp_path).iterdir

    def deny(self):
        if self.name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(self)

    monkeypatch.setattr(type(tmp_path), "iterdir", deny)
    files, problems = collect_inputs([tmp_path / "locked", tmp_path / "d"])
    assert len(files) == 2 and problems == [(tmp_path / "locked", "cannot list folder (Permission denied)")]


def test_padding_and_centre_crop():
    img = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(2, 5, 7)
    assert padded_size((5, 7), 4) == (8, 8)
    p = pad_bottom_right(img, (8, 8))
    assert p.shape == (2, 8, 8) and torch.equal(p[:, :5, :7], img)
    assert torch.equal(p[:, 5, :7], img[:, 3])  # reflection without repeating the edge
    tiny = torch.rand(3, 2, 2)
    assert torch.equal(pad_bottom_right(tiny, (4, 4))[:, 3, :2], tiny[:, 1])  # too small to reflect: replicate
    rect = torch.rand(3, 40, 60)
    out = center_crop_resize(rect, 40)
    assert torch.equal(out, rect[:, :, 10:50])
    assert center_crop_resize(rect, 20).shape == (3, 20, 20)
