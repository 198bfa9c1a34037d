"""``--max-batch auto``: the engine's batch from the denoiser's measured cost at each batch size.

Batching pays only while a larger denoiser call costs less per image. On a GPU the cost of a call is nearly
flat up to a large batch; on a CPU it grows about linearly, so every sample that joins a tick slows the
others down and one request at a time has the best latency at the same throughput. ``auto`` doubles the batch
from 1 while each doubling still raises the images/s by at least ``AUTO_GAIN``.
"""

from __future__ import annotations

import statistics
import time

import torch

AUTO_GAIN = 0.10  # a doubling must raise images/s by this fraction to be taken
AUTO_CAP = 64  # the largest batch auto tries


def choose_batch(seconds: dict[int, float], gain: float = AUTO_GAIN) -> int:
    """The largest batch b of ``seconds`` (batch → seconds per denoiser call; batches 1, 2, 4, …) such that
    every doubling up to b raised the images/s (b / seconds) by at least ``gain``."""
    if 1 not in seconds:
        raise ValueError("the profile needs batch 1")
    chosen = 1
    while 2 * chosen in seconds and (2 * chosen / seconds[2 * chosen]) >= (1 + gain) * (chosen / seconds[chosen]):
        chosen *= 2
    return chosen


def time_call(denoiser, batch: int, image_size: int, device: str, repeats: int) -> float:
    """Median seconds of ``repeats`` denoiser calls on (batch, 3, image_size, image_size) zeros at t = 500,
    after one untimed call (kernels chosen, memory reserved)."""
    x = torch.zeros(batch, 3, image_size, image_size, device=device)
    t = torch.full((batch,), 500.0, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            sync()
            t0 = time.perf_counter()
            denoiser(x, t)
            sync()
            if i:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile_batches(denoiser, image_size: int, device: str, cap: int = AUTO_CAP, repeats: int = 3,
                    gain: float = AUTO_GAIN) -> dict[int, float]:
    """Seconds per denoiser call at batch 1, 2, 4, … up to ``cap``, stopping at the first doubling that does not
    pay (by :func:`choose_batch`) or does not fit in memory."""
    seconds = {1: time_call(denoiser, 1, image_size, device, repeats)}
    batch = 2
    while batch <= cap:
        try:
            seconds[batch] = time_call(denoiser, batch, image_size, device, repeats)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        if choose_batch(seconds, gain) < batch:
            break
        batch *= 2
    return seconds
