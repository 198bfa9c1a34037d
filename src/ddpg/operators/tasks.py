"""The one task table: each paper task's builder, parameters and implementations, its per-image hooks, its
aliases and the names the CLI offers. ``make_operator(task, size, **params)`` builds from it, every parameter
defaulting to the paper's setting; a task in the table is offered by the CLI, restore, degrade and serve and
is covered by the operator contract tests. :func:`register_task` adds one at run time, and ``DDPG_TASKS``
names plug-in tables loaded when ``ddpg.operators`` is imported (:func:`load_task_plugins`)."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ddpg.errors import OperatorError
from ddpg.io import pad_bottom_right

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


def no_image_params(index: int, seed: int) -> dict:
    """No parameter drawn per image."""
    return {}


def same_size(params: dict) -> int:
    """A measurement as large as the image."""
    return 1


def as_given(y: torch.Tensor, operator: Operator) -> torch.Tensor:
    """An observed input is the measurement as it is."""
    return y


def as_built(params: dict, size: tuple[int, int], padded: tuple[int, int]) -> dict:
    """Parameters that do not depend on the image size."""
    return params


@dataclass(frozen=True)
class Task:
    """A task: ``build(hw, impl, params)`` → operator for images (H, W); ``params`` its keyword parameters
    (besides ``impl``); ``impls`` its implementations, the first the default (none: the operator is exact with
    no implementation choice, and ``impl`` is ignored, as today); ``cli`` the name the CLI offers it under (with
    ``cli_params``), if any; ``checks`` the value checks of its parameters where they differ from
    :data:`PARAM_CHECKS`. The hooks the file-level code (restore, degrade, serve, bench) calls instead of
    asking which task it is:

    - ``kernel_task``: the task a user's kernel (``--kernel``) turns it into (None: it takes none);
    - ``user_mask``: whether a user's mask (``--mask``: a file, ``box`` or ``random[:R]``) builds it;
    - ``per_image(index, seed)``: the parameters drawn for input ``index`` with seed ``seed`` (its generator,
      as DeepInverse's PhysicsGenerator: the reference's motion kernel of seed 10·i, the random mask's seed);
    - ``measurement_scale(params)``: how many times smaller than the image each side of y is (SR: the scale);
    - ``observe(y, operator)``: the measurement (1, C, h, w) an observed input (1, C', h, w) stands for, after
      padding (colorization: a colour image's grey mean; inpainting: zeros in the holes);
    - ``fit(params, size, padded)``: its parameters for an image of ``size`` padded to ``padded`` (inpainting:
      the mask built at the image's size and reflect-padded with it);
    - ``bench_impl``: the implementation ``ddpg bench`` times (None: the default).
    What a noiseless measurement fixes exactly (DiffPIR pastes it back) is the operator's
    :meth:`~.base.Operator.paste_known`."""

    build: Callable[[tuple[int, int], str | None, dict], Operator]
    params: tuple[str, ...]
    impls: tuple[str, ...]
    cli: str | None = None
    cli_params: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    kernel_task: str | None = None
    user_mask: bool = False
    per_image: Callable[[int, int], dict] = no_image_params
    measurement_scale: Callable[[dict], int] = same_size
    observe: Callable[[torch.Tensor, Operator], torch.Tensor] = as_given
    fit: Callable[[dict, tuple[int, int], tuple[int, int]], dict] = as_built
    bench_impl: str | None = None


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


def sr_scale(params: dict) -> int:
    """The SR factor (default 4, as the builders')."""
    return int(params.get("scale", 4))


def reference_motion_seed(index: int, seed: int) -> dict:
    """The reference evaluation draws image i's motion kernel with NumPy seed 10·i."""
    return {"seed": 10 * index}


def image_seed(index: int, seed: int) -> dict:
    """A random mask drawn with the image's own seed."""
    return {"seed": seed}


def mask_at_size(params: dict, size: tuple[int, int], padded: tuple[int, int]) -> dict:
    """{"mask": the (H', W') bool mask}: :func:`make_mask` of ``params`` (mask, box, ratio, seed) at the image's
    ``size``, reflect-padded at the bottom and right to ``padded`` as the image is."""
    m = make_mask(size, params.get("mask"), params.get("box"), params.get("ratio"), int(params.get("seed", 0)))
    if tuple(padded) != tuple(size):
        m = pad_bottom_right(m[None].float(), padded)[0] > 0.5
    return {"mask": m}


def holes_zeroed(y: torch.Tensor, operator: Operator) -> torch.Tensor:
    """An observed masked image with zeros in the holes (A y)."""
    return operator.A(y)


def grey(y: torch.Tensor, operator: Operator) -> torch.Tensor:
    """A colour image's channel mean; a grey one as it is."""
    return y.mean(1, keepdim=True) if y.shape[1] == 3 else y


def build_denoising(hw: tuple[int, int], impl: None, params: dict) -> Operator:
    return Identity(hw)


def build_colorization(hw: tuple[int, int], impl: None, params: dict) -> Operator:
    return Colorization(hw)


TASK_TABLE: dict[str, Task] = {
    "sr_bicubic": Task(build_sr_bicubic, ("scale", "threshold"), ("svd", "fft"), cli="sr4",
                       cli_params={"scale": 4}, measurement_scale=sr_scale, bench_impl="fft"),
    "sr_avgpool": Task(build_sr_avgpool, ("scale",), ("svd", "fft"), measurement_scale=sr_scale),
    "deblur_gauss": Task(build_deblur_gauss, ("kernel_size", "sigma", "threshold"), ("fft", "svd"),
                         cli="deblur_gauss", kernel_task="deblur_kernel"),
    "deblur_motion": Task(build_deblur_motion, ("kernel", "seed", "kernel_size", "intensity"), ("fft",),
                          cli="deblur_motion", checks={"kernel_size": integer(3)}, kernel_task="deblur_motion",
                          per_image=reference_motion_seed),
    "deblur_kernel": Task(build_deblur_kernel, ("kernel",), ("fft",), kernel_task="deblur_kernel"),
    "inpainting": Task(build_inpainting, ("mask", "box", "ratio", "seed"), (), cli="inpaint", user_mask=True,
                       per_image=image_seed, observe=holes_zeroed, fit=mask_at_size),
    "denoising": Task(build_denoising, (), (), cli="denoise"),
    "colorization": Task(build_colorization, (), (), cli="colorize", observe=grey),
}
BUILT_IN_TASKS = frozenset(TASK_TABLE)
OTHER_ALIASES = {"motion_deblur": ("deblur_motion", {}), "sr_averagepooling": ("sr_avgpool", {})}


class TableNames(Sequence):
    """A read-only tuple derived from :data:`TASK_TABLE` on every use, so it holds tasks registered later."""

    def __init__(self, derive: Callable[[], tuple]):
        self._derive = derive

    def __getitem__(self, index):
        return self._derive()[index]

    def __len__(self) -> int:
        return len(self._derive())

    def __repr__(self) -> str:
        return repr(self._derive())


class TableMap(Mapping):
    """A read-only mapping derived from :data:`TASK_TABLE` on every use (values are fresh copies)."""

    def __init__(self, derive: Callable[[], dict]):
        self._derive = derive

    def __getitem__(self, key):
        return self._derive()[key]

    def __iter__(self) -> Iterator:
        return iter(self._derive())

    def __len__(self) -> int:
        return len(self._derive())

    def __repr__(self) -> str:
        return repr(self._derive())


TASKS = TableNames(lambda: tuple(TASK_TABLE))
# CLI name → (task, parameters)
OPERATOR_OF_TASK = TableMap(lambda: {t.cli: (name, dict(t.cli_params)) for name, t in TASK_TABLE.items() if t.cli})
ALIASES = TableMap(lambda: {cli: (name, params) for cli, (name, params) in OPERATOR_OF_TASK.items() if cli != name}
                   | {alias: (name, dict(params)) for alias, (name, params) in OTHER_ALIASES.items()})
CLI_TASKS = TableNames(lambda: tuple(OPERATOR_OF_TASK))
KERNEL_TASKS = TableNames(lambda: tuple(t.cli for t in TASK_TABLE.values() if t.kernel_task and t.cli))
MASK_TASKS = TableNames(lambda: tuple(t.cli for t in TASK_TABLE.values() if t.user_mask and t.cli))
PLUGINS_VARIABLE = "DDPG_TASKS"


def task_entry(task: str) -> Task:
    """The table row of ``task`` (a :data:`TASK_TABLE` name); OperatorError naming the known ones otherwise."""
    if task not in TASK_TABLE:
        raise OperatorError(f"unknown task {task!r}; known: {', '.join((*TASKS, *ALIASES))}")
    return TASK_TABLE[task]


def register_task(name: str, task: Task) -> None:
    """Add ``task`` to the table as ``name``: :func:`make_operator` builds it and, when it has a ``cli`` name,
    restore, degrade, serve and the command line offer it (``ddpg.operators.tasks`` holds the hooks and
    defaults a row may use). OperatorError if ``name`` or its CLI name is taken."""
    if not isinstance(task, Task):
        raise OperatorError(f"register_task({name!r}): expected a Task, got {type(task).__name__}")
    taken = set(TASK_TABLE) | set(ALIASES) | set(CLI_TASKS)
    clash = next((n for n in (name, task.cli) if n in taken), None)
    if clash is not None:
        raise OperatorError(f"register_task({name!r}): the task name {clash!r} is taken")
    TASK_TABLE[name] = task


def unregister_task(name: str) -> None:
    """Remove a task :func:`register_task` added (the built-in tasks stay)."""
    if name in BUILT_IN_TASKS or name not in TASK_TABLE:
        raise OperatorError(f"unregister_task({name!r}): not a registered plug-in task")
    del TASK_TABLE[name]


def load_task_plugins(spec: str | None) -> list[str]:
    """Register the plug-in tasks ``spec`` names, ``module:attribute[,module:attribute…]`` (each attribute a mapping
    of task name → :class:`Task`), and return their names; nothing for None or "". ``ddpg.operators`` loads
    ``$DDPG_TASKS`` when it is imported, so every process — the command line, ``ddpg serve`` — has the same
    tasks. OperatorError naming the entry that cannot be loaded."""
    names = []
    for entry in filter(None, (part.strip() for part in (spec or "").split(","))):
        module, _, attribute = entry.partition(":")
        try:
            tasks = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise OperatorError(f"{PLUGINS_VARIABLE}: cannot load {entry!r} (module:attribute): {exc}") from exc
        if not isinstance(tasks, Mapping):
            raise OperatorError(f"{PLUGINS_VARIABLE}: {entry!r} is not a mapping of task name → Task")
        for name, task in tasks.items():
            register_task(name, task)
            names.append(name)
    return names


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
    entry = task_entry(task)
    impl = params.pop("impl", None)
    unknown = set(params) - set(entry.params)
    if unknown:
        raise OperatorError(f"{task}: unknown parameter(s) {sorted(unknown)}; allowed: {sorted(entry.params)}")
    check_params(task, params)
    return entry.build(hw, check_impl(task, impl, entry.impls), params)
