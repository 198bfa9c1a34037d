"""Image files at the edges: loading (8/16-bit, grey, RGBA, EXIF orientation), atomic saving, input lists.

Images are (3, H, W) float32 tensors in [0, 1] here; samplers work in [-1, 1].
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ddpg.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def load_image(path: str | Path) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1]: EXIF orientation applied, grey expanded, alpha dropped with a warning,
    16-bit PNGs kept at full precision."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64) / (65535.0 if im.mode.startswith("I;16") else 2**16 - 1)
                arr = np.clip(arr, 0, 1)[..., None].repeat(3, axis=2)
            else:
                if "A" in im.getbands() or im.mode == "P" and "transparency" in im.info:
                    warnings.warn(f"{path}: alpha channel dropped (composited on black is not done; RGB kept)",
                                  stacklevel=2)
                arr = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from exc
    return torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1).contiguous()


def to_uint(img: torch.Tensor, bits: int = 8) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, C) or (H, W) integers, rounded and clamped."""
    peak = 2**bits - 1
    arr = (img.detach().float().clamp(0, 1) * peak).round().cpu().numpy()
    arr = arr.astype(np.uint16 if bits == 16 else np.uint8).transpose(1, 2, 0)
    return arr[..., 0] if arr.shape[2] == 1 else arr


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the destination folder, then rename over ``path``."""
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


def save_image(img: torch.Tensor, path: str | Path, bits: int = 8) -> None:
    """Save (C, H, W) in [0, 1] as PNG (8- or 16-bit), atomically."""
    arr = to_uint(img, bits)
    if bits == 16:
        if arr.ndim == 3:
            raise InputError("16-bit output is supported for greyscale only by Pillow; use 8-bit for RGB")
        pil = Image.fromarray(arr, mode="I;16")
    else:
        pil = Image.fromarray(arr)
    _atomic(Path(path), lambda tmp: pil.save(tmp, format="PNG"))


def save_json(data: dict, path: str | Path) -> None:
    _atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def save_tensor(t: torch.Tensor, path: str | Path) -> None:
    _atomic(Path(path), lambda tmp: torch.save(t.detach().cpu(), tmp))


def collect_inputs(paths: list[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files from files and folders (folders: their image files, sorted). Returns (files, problems)."""
    files, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            try:
                entries = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            except OSError as exc:
                problems.append((p, f"cannot list folder ({exc.strerror or exc})"))
                continue
            if not entries:
                problems.append((p, "folder holds no image files"))
            files.extend(entries)
        elif p.is_file():
            files.append(p)
        else:
            problems.append((p, "no such file or folder"))
    return files, problems


def center_crop_resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """Square centre crop of side min(H, W), then bilinear antialiased resize to size×size (the papers'
    ImageNet preprocessing)."""
    _, H, W = img.shape
    side = min(H, W)
    top, left = (H - side) // 2, (W - side) // 2
    crop = img[:, top:top + side, left:left + side]
    if side == size:
        return crop
    return torch.nn.functional.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)[0].clamp(0, 1)
