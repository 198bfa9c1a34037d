"""Fuzzing the edges: random bytes, truncated files and oversized headers of PNG / JPEG / TIFF /
BMP / 16-bit PNG into the image loader, and random option values into ``restore``'s validation. Nothing may
escape as anything but a ddpg error naming the file or parameter, and no decoder may allocate for more pixels
than the limit (NumPy's allocations, where pixels are decoded here, are traced by tracemalloc; Pillow is
refused the file before it decodes)."""

import io
import math
import random
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ddpg import api
from ddpg.errors import DdpgError, InputError
from ddpg.io import load_image, load_measurement
from hostile_files import mutated_png16, mutated_pt, probe, saved_pt, valid_png16

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning", "ignore::UserWarning")
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
LIMIT = 4096  # pixels: every header below that claims more must be refused before decoding
BUDGET = 8 << 20  # bytes any one load may allocate (a 4096-pixel image needs far less)


def encoded(fmt: str, width: int = 8, height: int = 6) -> bytes:
    """A small valid image file of ``fmt`` (PNG, JPEG, TIFF, BMP or PNG16)."""
    rng = np.random.default_rng(0)
    if fmt == "PNG16":
        from ddpg.io import encode_png16

        return encode_png16(rng.integers(0, 65536, (height, width, 3), dtype=np.uint16))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def with_size(data: bytes, fmt: str, width: int, height: int) -> tuple[bytes, int]:
    """``data`` with the width and height in its header replaced (the pixel data left as it was), and the
    number of pixels the new header claims (its fields may be narrower than ``width`` and ``height``)."""
    b = bytearray(data)
    claimed = width * height
    if fmt in ("PNG", "PNG16"):
        b[16:24] = struct.pack(">II", width, height)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    elif fmt == "BMP":
        b[18:26] = struct.pack("<ii", width, height)
    elif fmt == "JPEG":
        sof = next(i for i in range(len(b) - 1) if b[i] == 0xFF and b[i + 1] in (0xC0, 0xC2))
        b[sof + 5:sof + 9] = struct.pack(">HH", height % 65536, width % 65536)
        claimed = (width % 65536) * (height % 65536)
    elif fmt == "TIFF":
        ifd = int.from_bytes(b[4:8], "little")
        count = struct.unpack("<H", b[ifd:ifd + 2])[0]
        claimed = 1
        for k in range(count):
            entry = ifd + 2 + 12 * k
            tag, kind = struct.unpack("<HH", b[entry:entry + 4])
            if tag in (256, 257):
                value = (width if tag == 256 else height) % (2**32 if kind == 4 else 2**16)
                b[entry + 8:entry + 12] = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
                claimed *= value
    return bytes(b), claimed


def load_within_budget(path, max_pixels=LIMIT):
    """load_image under tracemalloc: the image or the InputError's message, and the peak bytes NumPy took."""
    tracemalloc.start()
    try:
        return load_image(path, max_pixels=max_pixels), tracemalloc.get_traced_memory()[1]
    except InputError as exc:
        assert str(exc).startswith(f"{path}: ")
        return str(exc), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


FORMATS = ["PNG", "JPEG", "TIFF", "BMP", "PNG16"]
SUFFIX = {"PNG": ".png", "PNG16": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_files_of_each_format_load(tmp_path, fmt):
    path = tmp_path / f"ok{SUFFIX[fmt]}"
    path.write_bytes(encoded(fmt))
    img, _ = load_within_budget(path)
    assert not isinstance(img, str) and tuple(img.shape) == (3, 6, 8)


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(data=st.data())
def test_truncated_and_corrupted_files_fail_as_input_errors(tmp_path, fmt, data):
    raw = encoded(fmt)
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut")
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)), max_size=4))
    b = bytearray(raw[:cut] if data.draw(st.booleans(), label="truncate") else raw)
    for pos, xor in flips:
        if pos < len(b):
            b[pos] ^= xor
    path = tmp_path / f"f{SUFFIX[fmt]}"
    path.write_bytes(bytes(b))
    img, peak = load_within_budget(path)
    assert peak < BUDGET
    if not isinstance(img, str):
        assert img.ndim == 3 and img.shape[0] == 3 and bool(((img >= 0) & (img <= 1)).all())


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(width=st.integers(0, 2**31 - 1), height=st.integers(0, 2**31 - 1))
def test_oversized_headers_are_refused_before_decoding(tmp_path, fmt, width, height):
    path = tmp_path / f"big{SUFFIX[fmt]}"
    data, claimed = with_size(encoded(fmt), fmt, width, height)
    path.write_bytes(data)
    img, peak = load_within_budget(path)
    assert peak < BUDGET
    if claimed > LIMIT:
        assert isinstance(img, str) and "pixels is more than the limit of 4,096" in img, img
    elif not isinstance(img, str):
        assert img.shape[1] * img.shape[2] == claimed


@FUZZ
@given(raw=st.binary(max_size=2048), head=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff",
                                                          b"II*\x00", b"MM\x00*", b"BM"]))
def test_random_bytes_fail_as_input_errors(tmp_path, raw, head):
    path = tmp_path / "r.png"
    path.write_bytes(head + raw)
    img, peak = load_within_budget(path)
    assert peak < BUDGET and (isinstance(img, str) or img.shape[0] == 3)


OPTION_VALUES = {
    "sigma_y": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
    "steps": st.one_of(st.none(), st.integers(-3, 3)),
    "seed": st.integers(-3, 3),
    "batch_size": st.integers(-2, 3),
    "bits": st.sampled_from([0, 1, 8, 12, 16, -16]),
    "size": st.one_of(st.none(), st.integers(-64, 64)),
    "max_pixels": st.integers(-10, 10**6),
    "task": st.sampled_from([None, "sr4", "inpaint", "deblur_gauss", "nope", ""]),
    "method": st.sampled_from([None, "ddpg", "idpg", "ddnm", "x"]),
    "mask": st.sampled_from([None, "box", "random", "random:0.3", "random:1.5", "random:", "random:.", "nofile"]),
    "hyper": st.one_of(st.none(), st.dictionaries(st.sampled_from(["zeta", "eta", "gamma", "n_max", "bogus"]),
                                                  st.one_of(st.floats(), st.integers(), st.text(max_size=3),
                                                            st.booleans()), max_size=2)),
}


@FUZZ
@given(options=st.fixed_dictionaries({}, optional=OPTION_VALUES))
def test_random_options_are_refused_cleanly_before_any_input_is_read(tmp_path, monkeypatch, options):
    """Any option values: a DdpgError (the CLI's exit 2) before an input is read, or a run that succeeds."""
    import ddpg.api.restoration as restoration

    loaded = []
    monkeypatch.setattr(restoration, "run_plan", lambda plan, pending, *a: loaded.extend(pending))
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    try:
        api.restore([folder], tmp_path / "out", prior="gaussian", resize=options.get("size") is not None, **options)
    except DdpgError:
        assert loaded == []
        return
    sigma = options.get("sigma_y")
    assert sigma is None or (math.isfinite(sigma) and 0 <= sigma <= 1)
    assert options.get("batch_size", 1) >= 1 and options.get("max_pixels", 1) >= 1 and options.get("bits", 8) in (8, 16)


@FUZZ
@given(shape=st.lists(st.integers(0, 2**20), min_size=1, max_size=4), raw=st.binary(max_size=256),
       suffix=st.sampled_from([".npy", ".pt"]))
def test_measurement_files_with_random_headers_fail_as_input_errors(tmp_path, shape, raw, suffix):
    """An .npy header claiming any shape, or random bytes as .pt: refused before an array of more than the
    limit is allocated (the header is read first)."""
    path = tmp_path / f"m{suffix}"
    path.write_bytes(_npy(tuple(shape), raw) if suffix == ".npy" else raw)
    tracemalloc.start()
    try:
        y = load_measurement(path, max_pixels=LIMIT)
        assert y.ndim == 3 and y.shape[1] * y.shape[2] <= 3 * LIMIT
    except InputError as exc:
        assert str(exc).startswith(f"{path}: ")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < BUDGET


def _npy(shape: tuple, payload: bytes) -> bytes:
    """An .npy file (format 1.0, float32) whose header claims ``shape``, followed by ``payload``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


# ----------------------------------------------------------------------- 16-bit PNG pixel data and .pt measurements


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_16bit_png_pixel_data_mutations_load_or_fail_as_input_errors(tmp_path, rng):
    """16-bit PNGs (straight or Adam7) whose inflated scanlines or compressed stream are mutated behind valid
    CRCs (:func:`hostile_files.mutated_png16`): an image of the header's size or an InputError naming the file,
    within the budget (this decoder's allocations are Python's and NumPy's, all traced)."""
    data, size = mutated_png16(rng)
    path = tmp_path / "m.png"
    path.write_bytes(data)
    img, peak = load_within_budget(path)
    assert peak < BUDGET
    if not isinstance(img, str):
        assert tuple(img.shape) == (3, *size) and bool(((img >= 0) & (img <= 1)).all())


@FUZZ
@given(rng=st.randoms(use_true_random=False))
def test_pt_measurement_mutations_load_or_fail_as_input_errors(tmp_path, rng):
    """Mutated ``.pt`` measurements (:func:`hostile_files.mutated_pt`: the whole file, or one entry of the zip
    behind valid CRCs): a finite float32 (1 or 3, h, w) measurement of at most 3 × the limit values, or an
    InputError naming the file. Torch allocates outside tracemalloc: the next test bounds its memory."""
    path = tmp_path / "m.pt"
    path.write_bytes(mutated_pt(rng))
    try:
        y = load_measurement(path, max_pixels=LIMIT)
    except InputError as exc:
        assert str(exc).startswith(f"{path}: ")
        return
    assert y.dtype == torch.float32 and y.ndim == 3 and y.shape[0] in (1, 3) and y.numel() <= 3 * LIMIT
    assert bool(torch.isfinite(y).all())


def test_mutated_16bit_pngs_and_pt_files_load_within_bounded_memory(tmp_path):
    """200 mutated 16-bit PNGs and 200 mutated ``.pt`` files (seeded) loaded in a fresh process: each loads or
    is an InputError naming it, and all of them together raise the process's peak RSS by less than 64 MB."""
    (tmp_path / "ok.png").write_bytes(valid_png16()[0])
    (tmp_path / "ok.pt").write_bytes(saved_pt(torch.zeros(3, 5, 4)))
    for kind, make, suffix in [("image", lambda rng: mutated_png16(rng)[0], ".png"),
                               ("measurement", mutated_pt, ".pt")]:
        paths = [tmp_path / f"{kind}{i}{suffix}" for i in range(200)]
        for i, path in enumerate(paths):
            path.write_bytes(make(random.Random(i)))
        results, grew = probe(kind, paths, tmp_path / f"ok{suffix}", max_pixels=LIMIT)
        for path, result in results.items():
            assert "loaded" in result or (result["error"] in ("InputError", "ImageTooLarge")
                                          and result["message"].startswith(f"{path}: ")), result
        assert grew < 64, (kind, grew)
