"""The one task table: each paper task's builder, parameters and implementations, its aliases and the names
the CLI offers. ``make_operator(task, size, **params)`` builds from it, every parameter defaulting to the
paper's setting; a task registered here is offered by the CLI and covered by the operator contract tests."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ddpg.errors import OperatorError

from .base import Operator
from .factory import check_scale, check_size, load_array, make_mask, normalised
from .fft import FFTBlur, FFTSuperRes
from .kernels import bicubic_taps_matlab, bicubic_taps_svd, gaussian_taps, motion_kernel, outer_kernel
from .svd import (
    Colorization,
    Identity,
    Inpainting,
    SeparableSVD,
    avgpool_matrix,
    bicubic_matrix,
    toeplitz_zero_boundary,
)


@dataclass(frozen=True)
class Task:
    """A task: ``build(hw, impl, params)`` → operator for images (H, W); ``params`` its keyword parameters
    (besides ``impl``); ``impls`` its implementations, the first the default (none: the operator is exact with
    no implementation choice, and ``impl`` is ignored, as today); ``blur`` whether a user kernel may replace its
    own; ``cli`` the name the CLI offers it under (with ``cli_params``), if any; ``checks`` the value checks of
    its parameters where they differ from :data:`PARAM_CHECKS`."""

    build: Callable[[tuple[int, int], str | None, dict], Operator]
    params: tuple[str, ...]
    impls: tuple[str, ...]
    blur: bool = False
    cli: str | None = None
    cli_params: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)


def integer(minimum: int) -> Callable[[object], str | None]:
    """A check: None for an integer >= ``minimum``, else what is wrong."""
    def check(value: object) -> str | None:
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum
        return None if ok else f"must be an integer >= {minimum}"
    return check


def number(low: float, high: float, *, low_open: bool = False, high_open: bool = False
           ) -> Callable[[object], str | None]:
    """A check: None for a finite number in the interval from ``low`` to ``high`` (ends open as given)."""
    def check(value: object) -> str | None:
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
            and math.isfinite(value) and (low < value if low_open else low <= value) \
            and (value < high if high_open else value <= high)
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        return None if ok else f"must be a finite number in {interval}"
    return check


PARAM_CHECKS: dict[str, Callable[[object], str | None]] = {  # the size-free checks of every task's parameters
    "scale": integer(1), "kernel_size": integer(1), "seed": integer(0),
    "sigma": number(0, math.inf, low_open=True, high_open=True), "threshold": number(0, 1, high_open=True),
    "intensity": number(0, 1), "ratio": number(0, 1, high_open=True)}


def build_sr_bicubic(hw: tuple[int, int], impl: str, params: dict) -> Operator:
    """16-tap Keys with symmetric borders (svd, threshold 3e-2) or the 17-tap MATLAB cubic, circular (fft)."""
    task = "sr_bicubic"
    scale = check_scale(task, params.get("scale", 4), hw)
    if impl == "fft":
        op: Operator = FFTSuperRes(outer_kernel(bicubic_taps_matlab(scale)), scale, hw, name=task)
    else:
        taps = bicubic_taps_svd(scale)
        if min(hw) < len(taps):
            raise OperatorError(f"{task}: image {hw} is smaller than the {len(taps)}-tap kernel")
        op = SeparableSVD(bicubic_matrix(hw[0], scale, taps), bicubic_matrix(hw[1], scale, taps), task,
                          threshold=float(params.get("threshold", 3e-2)), scale=scale,
                          sample_offset=(scale // 2 - 0.5, scale // 2 - 0.5))  # taps centred at anchor − ½
    op.params = {"scale": scale, "impl": impl}
    return op


def build_sr_avgpool(hw: tuple[int, int], impl: str, params: dict) -> Operator:
    """Block averaging: separable matrices (svd) or a circular box kernel sampled at (0, 0) (fft)."""
    task = "sr_avgpool"
    scale = check_scale(task, params.get("scale", 4), hw)
    if impl == "svd":
        op: Operator = SeparableSVD(avgpool_matrix(hw[0], scale), avgpool_matrix(hw[1], scale), task,
                                    scale=scale, sample_offset=((scale - 1) / 2, (scale - 1) / 2))
    else:
        # a (2s−1)² kernel whose centre is its last box entry: sample (0, 0) averages the block [0, s)²
        box = np.zeros((2 * scale - 1, 2 * scale - 1))
        box[:scale, :scale] = 1.0 / scale**2
        op = FFTSuperRes(box, scale, hw, name=task)
    op.params = {"scale": scale, "impl": impl}
    return op


def build_deblur_gauss(hw: tuple[int, int], impl: str, params: dict) -> Operator:
    """Gaussian blur: circular (fft) or zero boundary with threshold 3e-2 (svd)."""
    task = "deblur_gauss"
    taps = gaussian_taps(int(params.get("kernel_size", 5)), float(params.get("sigma", 10.0)))
    if len(taps) > min(hw):
        raise OperatorError(f"{task}: kernel {len(taps)}×{len(taps)} is larger than the image {hw}")
    if impl == "fft":
        op: Operator = FFTBlur(outer_kernel(taps), hw, name=task)
    else:
        op = SeparableSVD(toeplitz_zero_boundary(hw[0], taps), toeplitz_zero_boundary(hw[1], taps), task,
                          threshold=float(params.get("threshold", 3e-2)))
        op.kernel = torch.as_tensor(outer_kernel(taps))
    op.params = {"kernel_size": len(taps), "sigma": float(params.get("sigma", 10.0)), "impl": impl}
    return op


def build_deblur_motion(hw: tuple[int, int], impl: str, params: dict) -> Operator:
    """A given motion kernel, or the reference generator's of ``seed``; circular."""
    task = "deblur_motion"
    if params.get("kernel") is not None:
        kernel = normalised(load_array(params["kernel"], "motion kernel"), "motion kernel")
        desc: dict = {"kernel": "given"}
    else:
        seed = int(params.get("seed", 0))
        ks, inten = int(params.get("kernel_size", 61)), float(params.get("intensity", 0.5))
        if ks > min(hw):
            raise OperatorError(f"{task}: kernel {ks}×{ks} is larger than the image {hw}")
        kernel = motion_kernel(seed, ks, inten)
        desc = {"seed": seed, "kernel_size": ks, "intensity": inten}
    op = FFTBlur(kernel, hw, name=task)
    op.params = {**desc, "impl": impl}
    return op


def build_deblur_kernel(hw: tuple[int, int], impl: str, params: dict) -> Operator:
    """A given blur kernel, normalised to sum 1; circular."""
    if params.get("kernel") is None:
        raise OperatorError("deblur_kernel needs kernel= (a 2-D array, or a .npy/.png file)")
    kernel = load_array(params["kernel"], "blur kernel")
    op = FFTBlur(normalised(kernel, "blur kernel"), hw, name="deblur_kernel")
    op.params = {"kernel_shape": list(kernel.shape), "impl": impl}
    return op


def build_inpainting(hw: tuple[int, int], impl: None, params: dict) -> Operator:
    """A mask from :func:`make_mask`; ``params`` records what built it (arrays as "given")."""
    op = Inpainting(make_mask(hw, params.get("mask"), params.get("box"), params.get("ratio"),
                              int(params.get("seed", 0))), hw)
    op.params = {k: (v if not isinstance(v, (np.ndarray, torch.Tensor)) else "given")
                 for k, v in params.items()} | {"kept": int(op.mask.sum())}
    return op


def build_denoising(hw: tuple[int, int], impl: None, params: dict) -> Operator:
    return Identity(hw)


def build_colorization(hw: tuple[int, int], impl: None, params: dict) -> Operator:
    return Colorization(hw)


TASK_TABLE: dict[str, Task] = {
    "sr_bicubic": Task(build_sr_bicubic, ("scale", "threshold"), ("svd", "fft"), cli="sr4",
                       cli_params={"scale": 4}),
    "sr_avgpool": Task(build_sr_avgpool, ("scale",), ("svd", "fft")),
    "deblur_gauss": Task(build_deblur_gauss, ("kernel_size", "sigma", "threshold"), ("fft", "svd"), blur=True,
                         cli="deblur_gauss"),
    "deblur_motion": Task(build_deblur_motion, ("kernel", "seed", "kernel_size", "intensity"), ("fft",),
                          blur=True, cli="deblur_motion", checks={"kernel_size": integer(3)}),
    "deblur_kernel": Task(build_deblur_kernel, ("kernel",), ("fft",), blur=True),
    "inpainting": Task(build_inpainting, ("mask", "box", "ratio", "seed"), (), cli="inpaint"),
    "denoising": Task(build_denoising, (), (), cli="denoise"),
    "colorization": Task(build_colorization, (), (), cli="colorize"),
}
TASKS = tuple(TASK_TABLE)
OPERATOR_OF_TASK = {t.cli: (name, dict(t.cli_params)) for name, t in TASK_TABLE.items() if t.cli}
ALIASES = {cli: (name, dict(params)) for cli, (name, params) in OPERATOR_OF_TASK.items() if cli != name} | {
    "motion_deblur": ("deblur_motion", {}), "sr_averagepooling": ("sr_avgpool", {})}
CLI_TASKS = tuple(OPERATOR_OF_TASK)
BLUR_TASKS = tuple(name for name, t in TASK_TABLE.items() if t.blur)
KERNEL_TASKS = tuple(t.cli for t in TASK_TABLE.values() if t.blur and t.cli)


def check_impl(task: str, impl: str | None, impls: tuple[str, ...]) -> str | None:
    """``impl`` (default: the task's first) if the task has it (None for a task without implementations);
    OperatorError otherwise."""
    if not impls:
        return None
    if impl is None or impl in impls:
        return impl or impls[0]
    if len(impls) == 1:
        raise OperatorError(f"{task}: only impl='{impls[0]}' exists")
    raise OperatorError(f"{task}: impl must be {' or '.join(repr(i) for i in impls)}, got {impl!r}")


def check_params(task: str, params: dict) -> None:
    """Refuse a parameter value of ``task`` (a :data:`TASK_TABLE` name) that no image size could take, before
    any image is read: an OperatorError naming the parameter and what it must be."""
    checks = {**PARAM_CHECKS, **TASK_TABLE[task].checks}
    for key, value in params.items():
        problem = checks[key](value) if key in checks else None
        if problem is not None:
            raise OperatorError(f"{task}: {key}={value!r} {problem}")


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
    hw = check_size(size)
    if task not in TASK_TABLE:
        raise OperatorError(f"unknown task {task!r}; known: {', '.join(TASKS + tuple(ALIASES))}")
    entry = TASK_TABLE[task]
    impl = params.pop("impl", None)
    unknown = set(params) - set(entry.params)
    if unknown:
        raise OperatorError(f"{task}: unknown parameter(s) {sorted(unknown)}; allowed: {sorted(entry.params)}")
    check_params(task, params)
    return entry.build(hw, check_impl(task, impl, entry.impls), params)
