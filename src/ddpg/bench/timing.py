"""Clocks and statistics: CUDA events on the GPU (no synchronisation inside the measured loop), perf_counter
on the CPU; percentiles; a dense matrix-product rate to compare achieved FLOP/s against."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch


class Clock:
    """``mark()`` returns a timestamp token; ``elapsed_ms(a, b)`` converts a pair after ``sync()``.

    CUDA: tokens are events recorded on the current stream, read only after ``sync()`` (one synchronisation
    after the loop). CPU: tokens are ``perf_counter`` values.
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def elapsed_ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3

    def time_calls(self, fn: Callable[[], object], iters: int, warmup: int) -> list[float]:
        """Milliseconds of each of ``iters`` calls of ``fn`` after ``warmup`` untimed calls."""
        for _ in range(warmup):
            fn()
        self.sync()
        marks = [self.mark()]
        for _ in range(iters):
            fn()
            marks.append(self.mark())
        self.sync()
        return [self.elapsed_ms(a, b) for a, b in zip(marks[:-1], marks[1:], strict=True)]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (0–100) of ``values``."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summarize_ms(values: Sequence[float]) -> dict:
    """p50 / p90 / p99 / mean / min / max of a list of milliseconds, and how many."""
    return {"p50": percentile(values, 50), "p90": percentile(values, 90), "p99": percentile(values, 99),
            "mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)}


def matmul_rate(device: torch.device, dtype: torch.dtype | None = None, n: int | None = None,
                iters: int | None = None, warmup: int | None = None) -> dict:
    """Measured dense matrix-product rate (TFLOP/s, 2·n³ FLOP per product, median of ``iters`` timed products).

    Defaults: fp16 with n = 8192 on CUDA (the tensor-core rate docs/performance.md §2 quotes; 50 untimed products first,
    about 0.1 s, so the clocks have left idle), fp32 with n = 512 on CPU (3 untimed).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    dtype = dtype or (torch.float16 if cuda else torch.float32)
    n = n or (8192 if cuda else 512)
    iters = iters or (20 if cuda else 10)
    warmup = (50 if cuda else 3) if warmup is None else warmup
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    times = Clock(device).time_calls(lambda: torch.mm(a, b, out=out), iters=iters, warmup=warmup)
    ms = percentile(times, 50)
    return {"dtype": str(dtype).removeprefix("torch."), "n": n, "ms": ms, "tflops": 2 * n**3 / (ms * 1e-3) / 1e12}


__all__ = ["Clock", "matmul_rate", "percentile", "summarize_ms"]
