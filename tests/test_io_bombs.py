"""Files that decompress past their size: a 16-bit PNG whose IDAT inflates to far
more than its header needs, the bombs Pillow itself refuses (a huge palette PNG or TIFF, zTXt/iTXt/iCCP chunks),
and ``.pt`` measurements whose tensors claim more values than their file holds. Each is refused as
:class:`~ddpg.errors.ImageTooLarge` naming the file, in every loader, within bounded memory: the peak RSS of a
fresh process loading them (:func:`hostile_files.probe`), which each bomb here would otherwise raise by hundreds
of MB to GBs."""

import zipfile
import zlib

import numpy as np
import pytest
import torch

from ddpg.errors import ImageTooLarge, InputError
from ddpg.io import load_image, load_measurement
from hostile_files import (
    MB,
    crafted_pt,
    huge_palette_png,
    huge_tiff,
    inflated_idat,
    many_text_chunks,
    png16_bomb,
    png_file,
    probe,
    saved_pt,
    text_bomb,
    valid_png16,
)

BOUND_MB = 100  # what loading all of a test's files may add to a peak RSS (Pillow keeps up to 64 MiB of text)
BOMB = 256 * MB  # what each bomb would inflate to


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    """Every hostile image file by name, and a valid one ("valid") to warm a probe with."""
    folder = tmp_path_factory.mktemp("bombs")
    files = {"png16": png16_bomb(BOMB), "png16_interlaced": png16_bomb(BOMB, interlace=1),
             "palette": huge_palette_png(), "tiff": huge_tiff(), "ztxt": text_bomb(b"zTXt"),
             "itxt": text_bomb(b"iTXt"), "iccp": text_bomb(b"iCCP"),
             "ztxt_after_idat": text_bomb(b"zTXt", after_idat=True), "text_chunks": many_text_chunks(),
             "valid": valid_png16()[0]}
    suffix = {"tiff": ".tif"}
    paths = {name: folder / f"{name}{suffix.get(name, '.png')}" for name in files}
    for name, data in files.items():
        paths[name].write_bytes(data)
    return paths


def assert_too_large(result: dict, path, words: str = "") -> None:
    assert result.get("error") == "ImageTooLarge" and result["message"].startswith(f"{path}: "), result
    assert words in result["message"], result["message"]


def test_a_16_bit_png_zlib_bomb_is_refused_unread_in_every_loader(bombs):
    """A 260 kB 64×64 16-bit PNG whose IDAT inflates to 256 MB: refused by load_image (restore, serve, evaluate)
    after inflating no more than the 24,640 bytes its header needs (24,696 interlaced); masks and kernels (Pillow,
    which stops at the header's size) read it within the same bound."""
    names = ["png16", "png16_interlaced"]
    results, grew = probe("image", [bombs[n] for n in names], bombs["valid"])
    for name, need in zip(names, ["24,640", "24,696"], strict=True):  # 64 rows of 1 + 64 × 6 B; Adam7: 120 rows
        assert_too_large(results[bombs[name]], bombs[name], f"more than the {need} bytes its 64×64 header needs")
    assert grew < BOUND_MB, grew
    results, grew = probe("mask", [bombs[n] for n in names], bombs["valid"])
    assert all(results[bombs[n]] == {"loaded": [64, 64]} for n in names) and grew < BOUND_MB, (results, grew)


PILLOW_REFUSES = ["palette", "tiff", "ztxt", "itxt", "iccp", "text_chunks"]


def test_every_bomb_pillow_refuses_is_image_too_large(bombs):
    """Pillow's own refusals — more pixels than its limit, text or a colour profile inflating past
    MAX_TEXT_CHUNK, text chunks past MAX_TEXT_MEMORY (before or after the pixels) — are ImageTooLarge (``ddpg
    serve``'s 413) from load_image, and from open_image (the header check) where Pillow meets them there."""
    names = [*PILLOW_REFUSES, "ztxt_after_idat"]
    results, grew = probe("image", [bombs[n] for n in names], bombs["valid"])
    for name in names:
        assert_too_large(results[bombs[name]], bombs[name])
    assert "400,000,000 pixels is more than the limit of 33,554,432" in results[bombs["palette"]]["message"]
    assert "MAX_TEXT_CHUNK" in results[bombs["ztxt"]]["message"]
    assert grew < BOUND_MB, grew
    results, _ = probe("header", [bombs[n] for n in names], bombs["valid"])
    for name in PILLOW_REFUSES:
        assert_too_large(results[bombs[name]], bombs[name])
    assert results[bombs["ztxt_after_idat"]] == {"loaded": [4, 4]}  # its text is read with the pixels


def test_pillows_pixel_limit_is_image_too_large_under_a_higher_max_pixels(bombs):
    results, _ = probe("image", [bombs["palette"], bombs["tiff"]], bombs["valid"], max_pixels=10**9)
    for name in ("palette", "tiff"):
        assert_too_large(results[bombs[name]], bombs[name], "Pillow's decompression-bomb limit")


def test_size_refusals_before_decoding_are_image_too_large(tmp_path):
    """The pixel limit on a header and the file-size bound are ImageTooLarge too (in-process: nothing decoded)."""
    big = tmp_path / "big.png"
    big.write_bytes(png_file(100, 100, 16, 2, b""))
    with pytest.raises(ImageTooLarge, match=r"10,000 pixels is more than the limit of 4,096"):
        load_image(big, max_pixels=4096)
    long = tmp_path / "long.png"
    long.write_bytes(valid_png16()[0] + bytes(2 * MB))
    with pytest.raises(ImageTooLarge, match=r"is larger than any image of 4,096 pixels"):
        load_image(long, max_pixels=4096)


@pytest.mark.parametrize("planes", [2, 3, 4])
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (9, 7), (16, 11)])
@pytest.mark.parametrize("interlace", [False, True])
def test_valid_16_bit_pngs_load_exactly_interlaced_or_not(tmp_path, planes, size, interlace):
    """Adam7 interlaced 16-bit PNGs load as their straight twins do (sizes with empty passes included)."""
    data, arr = valid_png16(*size, planes=planes, interlace=interlace)
    path = tmp_path / "x.png"
    path.write_bytes(data)
    img = load_image(path)
    rgb = arr[..., :3] if planes >= 3 else arr[..., :1].repeat(3, axis=2)
    assert torch.equal(img, torch.from_numpy((rgb / 65535.0).astype(np.float32)).permute(2, 0, 1))


@pytest.mark.parametrize("interlace", [0, 1])
def test_16_bit_pixel_data_of_the_wrong_size_is_refused(tmp_path, interlace):
    """Data short of the header's size is a damaged file (InputError); one byte more is already too large."""
    path = tmp_path / "x.png"
    data, _ = valid_png16(64, 64, interlace=bool(interlace))
    raw = inflated_idat(data)
    need = len(raw)
    assert interlace or need == 64 * (1 + 64 * 6)
    for pixels, error, words in [(raw[:-1], InputError, f"{need - 1:,} bytes, not the {need:,}"),
                                 (raw + b"\0", ImageTooLarge, f"more than the {need:,} bytes")]:
        path.write_bytes(png_file(64, 64, 16, 2, zlib.compress(pixels), interlace=interlace))
        with pytest.raises(error, match=words) as caught:
            load_image(path)
        assert str(caught.value).startswith(f"{path}: ") and (error is ImageTooLarge) == isinstance(caught.value,
                                                                                                    ImageTooLarge)


# ------------------------------------------------------------------------------------------ .pt measurements


@pytest.fixture(scope="module")
def measurements(tmp_path_factory):
    """Hostile and valid .pt files by name."""
    folder = tmp_path_factory.mktemp("pt")
    expanded = torch.zeros(1).expand(3, 20000, 20000)
    files = {"expanded": saved_pt(expanded), "expanded_legacy": saved_pt(expanded, legacy=True),
             "deflated": crafted_pt((1, 1, 64 * MB), (64 * MB, 64 * MB, 1), 64 * MB, zipfile.ZIP_DEFLATED),
             "strides": crafted_pt((3, 20000, 20000), (20000 * 20000, 20000, 1), 16),
             "legacy_claim": _legacy_claim(2**31 - 1), "valid": saved_pt(torch.zeros(3, 8, 8))}
    paths = {name: folder / f"{name}.pt" for name in files}
    for name, data in files.items():
        paths[name].write_bytes(data)
    return paths


def _legacy_claim(numel: int) -> bytes:
    """A legacy torch.save file of a 10-value tensor whose pickle claims a storage of ``numel`` floats."""
    data = saved_pt(torch.zeros(10), legacy=True)
    at = data.index(b"cpu") + len(b"cpuq\x04")
    assert data[at:at + 2] == b"K\n"
    return data[:at] + b"J" + numel.to_bytes(4, "little", signed=True) + data[at + 2:]


def test_pt_measurements_are_bounded_before_their_data_is_touched(measurements):
    """A 1.5 kB expanded (3, 20000, 20000) tensor (zip or legacy format) is refused from its shape before any
    operation materialises it; a 260 kB archive whose deflated storage inflates to 256 MB is refused from its
    directory before torch reads it; a tiny storage with huge strides, or a legacy storage claiming 8 GB, is a
    damaged file. All within bounded memory."""
    names = ["expanded", "expanded_legacy", "deflated", "strides", "legacy_claim"]
    results, grew = probe("measurement", [measurements[n] for n in names], measurements["valid"], max_pixels=2**16)
    for name in ("expanded", "expanded_legacy"):
        assert_too_large(results[measurements[name]], measurements[name],
                         "shape (3, 20000, 20000) is more than the limit of 196,608 values")
    assert_too_large(results[measurements["deflated"]], measurements["deflated"], "inflates to 268,435,")
    for name in ("strides", "legacy_claim"):
        result = results[measurements[name]]
        assert result["error"] == "InputError" and not result["too_large"], result
        assert result["message"].startswith(f"{measurements[name]}: cannot read measurement"), result
    assert grew < BOUND_MB, grew


def test_valid_pt_measurements_load_in_either_format(tmp_path):
    y = torch.randn(1, 3, 5, 7, dtype=torch.float64)
    for legacy in (False, True):
        path = tmp_path / f"y{int(legacy)}.pt"
        path.write_bytes(saved_pt(y, legacy=legacy))
        loaded = load_measurement(path)
        assert loaded.dtype == torch.float32 and loaded.is_contiguous() and torch.equal(loaded, y[0].float())
    for bad, words in [(torch.zeros(3, 4, 4, dtype=torch.int64), "expected a floating-point tensor"),
                       (torch.zeros(3, 4, 4).to_sparse(), "expected a floating-point tensor"),
                       ({"y": torch.zeros(3, 4, 4)}, "expected a tensor, got dict")]:
        path = tmp_path / "bad.pt"
        path.write_bytes(saved_pt(bad))
        with pytest.raises(InputError, match=words):
            load_measurement(path)


def test_an_image_over_the_limit_in_a_mask_is_image_too_large_underneath(tmp_path):
    """A mask file refused for its size is an OperatorError whose cause is ImageTooLarge (``ddpg serve``'s 413)."""
    from ddpg.errors import OperatorError
    from ddpg.operators.factory import load_array

    path = tmp_path / "mask.png"
    path.write_bytes(huge_palette_png())
    with pytest.raises(OperatorError) as caught:
        load_array(path, "mask")
    assert isinstance(caught.value.__cause__, ImageTooLarge)
