"""CUDA-graph capture shared by the whole-step graph runner, the engine backends and the bench."""

from __future__ import annotations

import threading

# Held by ``Prefetcher`` around each load and by ``FastDDPGRunner`` around a CUDA-graph warm-up and capture:
# PyTorch's CUDA-graph constraints forbid non-captured CUDA work on any thread while a capture is underway.
CAPTURE_LOCK = threading.RLock()
