"""CUDA-graph capture shared by the whole-step graph runner, the engine backends and the bench."""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

from ddpg.errors import ConfigError

# Held by ``Prefetcher`` around each load and by :func:`capture_graph` around a warm-up and capture: PyTorch's
# CUDA-graph constraints forbid non-captured CUDA work on any thread while a capture is underway.
CAPTURE_LOCK = threading.RLock()


def capture_graph(fn: Callable[[], None], device: torch.device, *, warmup: int = 2,
                  generator: torch.Generator | None = None):
    """``fn`` (which reads and writes only static tensors) captured in a ``torch.cuda.CUDAGraph``.

    ``warmup`` eager calls (at least 1: lazy init, cuDNN autotuning, cuFFT plans) and the capture run on one
    side stream of ``device``, under that device and under ``CAPTURE_LOCK``; ``capture_error_mode=
    "thread_local"`` keeps other threads' CUDA calls from invalidating the capture. The stream is explicit
    because the graph's shared default capture stream lives on whichever device was current when the first
    graph in the process was made. ``generator``: a CUDA generator ``fn`` draws from, registered before the
    capture so every replay advances it. Static tensors hold junk afterwards."""
    with CAPTURE_LOCK, torch.cuda.device(device):
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(max(1, warmup)):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if generator is not None:  # before capture begins; its RNG state tensors go to the current device
            if not hasattr(graph, "register_generator_state"):
                raise ConfigError("in-graph noise needs a torch with CUDAGraph.register_generator_state; pass "
                                  "noise= or generator= instead")
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
            fn()
    return graph
