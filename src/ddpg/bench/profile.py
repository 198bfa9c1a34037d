"""Kernel-time profile of a few UNet and guidance calls (``torch.profiler``): the top kernels and the shares of
GroupNorm, attention, convolution, matrix products, FFTs and the guidance, for the report's "where the time
goes" section. On CUDA the rows are the GPU kernels (device time); on the CPU they are the operators' self time.

Kernels are classified by name: cuDNN / cuBLAS / flash-attention kernel names and Inductor's fused Triton
kernel names (``triton_red_fused_native_group_norm_...``) name the operation they implement.

The profiler's Kineto library writes a ``USDT:... profiler_start`` and ``profiler_stop`` line to the process's
stderr (file descriptor 2, from C++) on every profile; its ``KINETO_LOG_LEVEL`` is read once, when a process first
profiles, so it cannot be set for one call. :func:`without_kineto_markers` drops those lines around each profile.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

# first match wins: attention before matrix products (flash kernels are CUTLASS), GroupNorm before convolution
# (Inductor fuses a convolution's bias into the following norm), convolution before matrix products
# (cuDNN's implicit-GEMM convolution kernels contain "gemm")
CATEGORIES: tuple[tuple[str, re.Pattern], ...] = (
    ("memory", re.compile(r"memcpy|memset", re.I)),
    ("attention", re.compile(r"flash|fmha|attention|sdpa|softmax|mha_", re.I)),
    ("groupnorm", re.compile(r"group_?norm|rowwisemoments|computefusedparams", re.I)),
    ("fft", re.compile(r"fft|dft", re.I)),
    ("convolution", re.compile(r"conv|fprop|dgrad|wgrad|winograd|implicit|nchwtonhwc|nhwctonchw|im2col|cudnn", re.I)),
    ("matmul", re.compile(r"gemm|gemv|cutlass|cublas|matmul|addmm|bmm|aten::mm\b|aten::linear", re.I)),
)
NAME_CHARS = 160  # kernel names are long C++ templates: keep the start


def classify(name: str) -> str:
    """The category of a kernel or operator name: memory, attention, groupnorm, fft, convolution, matmul, other."""
    return next((category for category, pattern in CATEGORIES if pattern.search(name)), "other")


def _rows(prof, cuda: bool) -> list[tuple[str, float]]:
    """(name, µs) of every GPU kernel / memory operation (CUDA), or of every operator's self CPU time (CPU)."""
    if cuda:
        return [(e.name, e.time_range.elapsed_us()) for e in prof.events()
                if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
    return [(e.name, e.self_cpu_time_total) for e in prof.events()
            if e.device_type == DeviceType.CPU and e.self_cpu_time_total > 0]


KINETO_MARKER = b"USDT:"  # the start of the lines Kineto writes on every profiler start and stop


@contextmanager
def without_kineto_markers() -> Iterator[None]:
    """The process's stderr (file descriptor 2) goes to a temporary file inside the block and is written back
    after it without Kineto's marker lines (:data:`KINETO_MARKER`); whatever else was written, by any thread, is
    kept, in order."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().splitlines(keepends=True)
            kept = b"".join(line for line in lines if not line.startswith(KINETO_MARKER))
            while kept:
                kept = kept[os.write(2, kept):]


def kernel_times(fn: Callable[[], object], device: torch.device, calls: int) -> list[tuple[str, float]]:
    """(name, µs) rows of ``calls`` calls of ``fn`` after one untimed call."""
    cuda = torch.device(device).type == "cuda"
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with without_kineto_markers(), profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        if cuda:
            torch.cuda.synchronize(device)
    return _rows(prof, cuda)


def summarize(parts: dict[str, list[tuple[str, float]]], calls: int, top: int = 10) -> dict:
    """Per-call µs of each part, the shares (0–1) of each category and of each part, and the ``top`` kernels."""
    total = sum(us for rows in parts.values() for _, us in rows)
    if total <= 0:
        raise ValueError("the profile recorded no kernel time")
    shares: dict[str, float] = {}
    kernels: dict[str, list] = {}
    for part, rows in parts.items():
        for name, us in rows:
            category = classify(name)
            shares[category] = shares.get(category, 0.0) + us / total
            entry = kernels.setdefault(name, [part, category, 0.0, 0])
            entry[2] += us
            entry[3] += 1
    ranked = sorted(kernels.items(), key=lambda item: -item[1][2])[:top]
    return {"calls": calls, "us_per_call": {part: sum(us for _, us in rows) / calls for part, rows in parts.items()},
            "part_shares": {part: sum(us for _, us in rows) / total for part, rows in parts.items()},
            "shares": dict(sorted(shares.items(), key=lambda item: -item[1])),
            "top": [{"name": name[:NAME_CHARS], "part": part, "category": category, "us_per_call": us / calls,
                     "launches_per_call": n / calls, "share": us / total}
                    for name, (part, category, us, n) in ranked]}


def profile_parts(parts: dict[str, Callable[[], object]], device: torch.device, calls: int = 3) -> dict:
    """Profile each callable of ``parts`` (e.g. {"unet": ..., "guidance": ...}) separately; ``summarize``."""
    return summarize({name: kernel_times(fn, device, calls) for name, fn in parts.items()}, calls)


__all__ = ["CATEGORIES", "classify", "kernel_times", "profile_parts", "summarize"]
