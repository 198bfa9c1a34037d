"""``--max-batch auto``: the engine's batch from the denoiser's measured cost at each batch size.

Batching pays while a larger denoiser call costs less per image; past that, a larger batch only makes every
tick longer. ``auto`` times calls at batch 1, 2, 4, … until two doublings in a row have not raised the best
images/s by ``AUTO_GAIN`` (or a batch does not fit in memory), then takes the smallest batch within
``AUTO_TOLERANCE`` of the best images/s: nearly the best throughput at the shortest ticks, and a choice that
timing noise on a plateau cannot push far.
"""

from __future__ import annotations

import time

import torch

AUTO_GAIN = 0.10  # a doubling that raises the best images/s by less than this does not count as progress
AUTO_TOLERANCE = 0.10  # the chosen batch reaches at least (1 - this) of the best images/s measured
AUTO_CAP = 64  # the largest batch auto tries
MIN_SECONDS = 0.5  # each batch is timed for at least this long (and at least ``repeats`` calls)


def choose_batch(seconds: dict[int, float], tolerance: float = AUTO_TOLERANCE) -> int:
    """The smallest batch of ``seconds`` (batch → seconds per denoiser call) whose images/s (b / seconds) is at
    least (1 − ``tolerance``) of the best."""
    if not seconds:
        raise ValueError("the profile is empty")
    rate = {b: b / s for b, s in seconds.items()}
    best = max(rate.values())
    return min(b for b, r in rate.items() if r >= (1 - tolerance) * best)


def time_call(denoiser, batch: int, image_size: int, device: str, repeats: int) -> float:
    """Seconds of one denoiser call on (batch, 3, image_size, image_size) zeros at t = 500: the fastest of at
    least ``repeats`` calls and ``MIN_SECONDS`` (other work on the machine only ever adds time), after one
    untimed call (kernels chosen, memory reserved)."""
    x = torch.zeros(batch, 3, image_size, image_size, device=device)
    t = torch.full((batch,), 500.0, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times: list[float] = []
    with torch.no_grad():
        denoiser(x, t)
        while len(times) < repeats or sum(times) < MIN_SECONDS:
            sync()
            t0 = time.perf_counter()
            denoiser(x, t)
            sync()
            times.append(time.perf_counter() - t0)
    return min(times)


def profile_batches(denoiser, image_size: int, device: str, cap: int = AUTO_CAP, repeats: int = 3,
                    gain: float = AUTO_GAIN) -> dict[int, float]:
    """Seconds per denoiser call at batch 1, 2, 4, … up to ``cap``; stops once two doublings in a row have not
    raised the best images/s by ``gain``, or at the first batch that does not fit in memory."""
    seconds: dict[int, float] = {}
    best, stalls, batch = 0.0, 0, 1
    while batch <= cap and stalls < 2:
        try:
            seconds[batch] = time_call(denoiser, batch, image_size, device, repeats)
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            torch.cuda.empty_cache()
            break
        rate = batch / seconds[batch]
        stalls = 0 if rate >= (1 + gain) * best else stalls + 1
        best = max(best, rate)
        batch *= 2
    return seconds
