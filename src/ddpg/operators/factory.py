"""``make_operator(task, size, **params)``: the paper tasks by name, every parameter defaulting to the
paper's setting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ddpg.errors import OperatorError

from .base import Operator
from .fft import FFTBlur, FFTSuperRes
from .kernels import bicubic_taps_matlab, bicubic_taps_svd, gaussian_taps, motion_kernel, outer_kernel
from .svd import (
    Colorization,
    Identity,
    Inpainting,
    SeparableSVD,
    avgpool_matrix,
    bicubic_matrix,
    check_divisible,
    toeplitz_zero_boundary,
)

ALIASES = {"sr4": ("sr_bicubic", {"scale": 4}), "inpaint": ("inpainting", {}), "denoise": ("denoising", {}),
           "colorize": ("colorization", {}), "motion_deblur": ("deblur_motion", {}),
           "sr_averagepooling": ("sr_avgpool", {})}
TASKS = ("sr_bicubic", "sr_avgpool", "deblur_gauss", "deblur_motion", "deblur_kernel", "inpainting",
         "denoising", "colorization")


def _size(size) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(n, (int, np.integer)) and n > 0 for n in hw):
        raise OperatorError(f"size must be a positive int or (H, W), got {size!r}")
    return int(hw[0]), int(hw[1])


def _scale(task: str, scale, hw: tuple[int, int]) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise OperatorError(f"{task}: scale must be a positive integer, got {scale!r}")
    check_divisible(task, hw, int(scale))
    return int(scale)


def load_array(source, what: str) -> np.ndarray:
    """A 2-D array from an array/tensor, a .npy file, or an image file (grey levels)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise OperatorError(f"{path}: {what} file not found")
        try:
            from ddpg.io import DEFAULT_MAX_PIXELS, load_npy, open_image

            if path.suffix == ".npy":
                arr = load_npy(path, DEFAULT_MAX_PIXELS)
            else:
                with open_image(path) as im:
                    arr = np.asarray(im.convert("L"), dtype=np.float64)
        except (OSError, ValueError, SyntaxError) as exc:
            raise OperatorError(f"{path}: cannot read {what}: {exc}") from exc
    else:
        arr = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2:
        raise OperatorError(f"{what} must be 2-D, got shape {arr.shape}")
    return arr


def normalised(kernel: np.ndarray, what: str) -> np.ndarray:
    """kernel / kernel.sum(), refusing kernels that are not finite or sum to zero."""
    total = kernel.sum()
    if not np.isfinite(kernel).all() or total == 0:
        raise OperatorError(f"{what} must be finite with a non-zero sum")
    return kernel / total


def make_mask(size: tuple[int, int], mask=None, box=None, ratio=None, seed: int = 0) -> torch.Tensor:
    """Inpainting mask (H, W) bool, True = kept: a given mask (array/file, non-zero = kept), a box
    (top, left, height, width) of missing pixels, or a random ``ratio`` of missing pixels; default: a centred
    box of half the size."""
    H, W = size
    if mask is not None:
        arr = load_array(mask, "mask")
        if arr.shape != (H, W):
            raise OperatorError(f"inpainting: mask has shape {arr.shape}, the image is {(H, W)}")
        return torch.as_tensor(arr > 0)
    if ratio is not None:
        if not 0 <= ratio < 1:
            raise OperatorError(f"inpainting: missing ratio must be in [0, 1), got {ratio}")
        g = torch.Generator().manual_seed(seed)
        return torch.rand(H, W, generator=g) >= ratio
    top, left, h, w = box if box is not None else (H // 4, W // 4, H // 2, W // 2)
    if h <= 0 or w <= 0 or top < 0 or left < 0 or top + h > H or left + w > W:
        raise OperatorError(f"inpainting: box {box} does not fit the image {(H, W)}")
    m = torch.ones(H, W, dtype=torch.bool)
    m[top:top + h, left:left + w] = False
    return m


def make_operator(task: str, size: int | tuple[int, int], **params) -> Operator:
    """Build a degradation operator for images of ``size`` (int or (H, W)) by task name; every parameter
    defaults to the paper's setting.

    - ``sr_bicubic``: scale=4, impl="svd" (16-tap Keys, symmetric borders, threshold=3e-2) | "fft" (17-tap
      MATLAB cubic, circular, sample (0, 0) of each block)
    - ``sr_avgpool``: scale=4, impl="svd" | "fft"
    - ``deblur_gauss``: kernel_size=5, sigma=10, impl="fft" (circular) | "svd" (zero boundary, threshold=3e-2)
    - ``deblur_motion``: kernel=None (2-D array/tensor or .npy/image file) or seed=0, kernel_size=61,
      intensity=0.5 (the reference generator); FFT
    - ``deblur_kernel``: kernel (2-D array/tensor or .npy/image file, normalised to sum 1); FFT
    - ``inpainting``: mask (array/tensor/file, non-zero = kept) | box=(top, left, height, width) missing |
      ratio (missing fraction) with seed=0; default a centred box of half the size
    - ``denoising``, ``colorization``: no parameters
    Aliases: sr4, inpaint, denoise, colorize, motion_deblur, sr_averagepooling. Bad values raise OperatorError.
    """
    if task in ALIASES:
        task, extra = ALIASES[task]
        params = {**extra, **params}
    hw = _size(size)
    impl = params.pop("impl", None)

    def reject_unknown(*allowed):
        unknown = set(params) - set(allowed)
        if unknown:
            raise OperatorError(f"{task}: unknown parameter(s) {sorted(unknown)}; allowed: {sorted(allowed)}")

    if task == "sr_bicubic":
        reject_unknown("scale", "threshold")
        scale = _scale(task, params.get("scale", 4), hw)
        impl = impl or "svd"
        if impl == "fft":
            op: Operator = FFTSuperRes(outer_kernel(bicubic_taps_matlab(scale)), scale, hw, name=task)
        elif impl == "svd":
            taps = bicubic_taps_svd(scale)
            if min(hw) < len(taps):
                raise OperatorError(f"{task}: image {hw} is smaller than the {len(taps)}-tap kernel")
            op = SeparableSVD(bicubic_matrix(hw[0], scale, taps), bicubic_matrix(hw[1], scale, taps), task,
                              threshold=float(params.get("threshold", 3e-2)), scale=scale,
                              sample_offset=(scale // 2 - 0.5, scale // 2 - 0.5))  # taps centred at anchor − ½
        else:
            raise OperatorError(f"{task}: impl must be 'svd' or 'fft', got {impl!r}")
        op.params = {"scale": scale, "impl": impl}
    elif task == "sr_avgpool":
        reject_unknown("scale")
        scale = _scale(task, params.get("scale", 4), hw)
        impl = impl or "svd"
        if impl == "svd":
            op = SeparableSVD(avgpool_matrix(hw[0], scale), avgpool_matrix(hw[1], scale), task, scale=scale,
                              sample_offset=((scale - 1) / 2, (scale - 1) / 2))
        elif impl == "fft":
            # a (2s−1)² kernel whose centre is its last box entry: sample (0, 0) averages the block [0, s)²
            box = np.zeros((2 * scale - 1, 2 * scale - 1))
            box[:scale, :scale] = 1.0 / scale**2
            op = FFTSuperRes(box, scale, hw, name=task)
        else:
            raise OperatorError(f"{task}: impl must be 'svd' or 'fft', got {impl!r}")
        op.params = {"scale": scale, "impl": impl}
    elif task == "deblur_gauss":
        reject_unknown("kernel_size", "sigma", "threshold")
        taps = gaussian_taps(int(params.get("kernel_size", 5)), float(params.get("sigma", 10.0)))
        if len(taps) > min(hw):
            raise OperatorError(f"{task}: kernel {len(taps)}×{len(taps)} is larger than the image {hw}")
        impl = impl or "fft"
        if impl == "fft":
            op = FFTBlur(outer_kernel(taps), hw, name=task)
        elif impl == "svd":
            op = SeparableSVD(toeplitz_zero_boundary(hw[0], taps), toeplitz_zero_boundary(hw[1], taps), task,
                              threshold=float(params.get("threshold", 3e-2)))
            op.kernel = torch.as_tensor(outer_kernel(taps))
        else:
            raise OperatorError(f"{task}: impl must be 'fft' or 'svd', got {impl!r}")
        op.params = {"kernel_size": len(taps), "sigma": float(params.get("sigma", 10.0)), "impl": impl}
    elif task == "deblur_motion":
        reject_unknown("kernel", "seed", "kernel_size", "intensity")
        if impl not in (None, "fft"):
            raise OperatorError(f"{task}: only impl='fft' exists")
        if params.get("kernel") is not None:
            kernel = normalised(load_array(params["kernel"], "motion kernel"), "motion kernel")
            desc = {"kernel": "given"}
        else:
            seed = int(params.get("seed", 0))
            ks, inten = int(params.get("kernel_size", 61)), float(params.get("intensity", 0.5))
            if ks > min(hw):
                raise OperatorError(f"{task}: kernel {ks}×{ks} is larger than the image {hw}")
            kernel = motion_kernel(seed, ks, inten)
            desc = {"seed": seed, "kernel_size": ks, "intensity": inten}
        op = FFTBlur(kernel, hw, name=task)
        op.params = {**desc, "impl": "fft"}
    elif task == "deblur_kernel":
        reject_unknown("kernel")
        if params.get("kernel") is None:
            raise OperatorError("deblur_kernel needs kernel= (a 2-D array, or a .npy/.png file)")
        kernel = load_array(params["kernel"], "blur kernel")
        op = FFTBlur(normalised(kernel, "blur kernel"), hw, name=task)
        op.params = {"kernel_shape": list(kernel.shape), "impl": "fft"}
    elif task == "inpainting":
        reject_unknown("mask", "box", "ratio", "seed")
        op = Inpainting(make_mask(hw, params.get("mask"), params.get("box"), params.get("ratio"),
                                  int(params.get("seed", 0))), hw)
        op.params = {k: (v if not isinstance(v, (np.ndarray, torch.Tensor)) else "given")
                     for k, v in params.items()} | {"kept": int(op.mask.sum())}
    elif task == "denoising":
        reject_unknown()
        op = Identity(hw)
    elif task == "colorization":
        reject_unknown()
        op = Colorization(hw)
    else:
        raise OperatorError(f"unknown task {task!r}; known: {', '.join(TASKS + tuple(ALIASES))}")
    return op

