"""A CUDA stream of an engine backend's own (ONNX Runtime, TensorRT), ordered against the caller's stream with
events: no host synchronization, and never the legacy default stream.

Why never stream 0, what torch's default stream reports in a plain restore: ONNX Runtime's CUDA provider treats a
user compute stream of 0 as none at all (``has_user_compute_stream = user_compute_stream != nullptr``,
onnxruntime/core/providers/cuda/cuda_execution_provider_info.cc) and would run on a stream torch knows nothing
of; TensorRT documents extra device synchronizations for ``execute_async_v3`` on the legacy default stream
(IExecutionContext.execute_async_v3, TensorRT Python API).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ddpg.engine_metadata import EngineError


class SideStream:
    """A new CUDA stream on ``device``. ``handle`` is its ``cudaStream_t`` (never 0). ``cuda``: the
    ``torch.cuda`` module (a stand-in in tests)."""

    def __init__(self, device: torch.device, *, cuda=None):
        self._cuda = torch.cuda if cuda is None else cuda
        self.device = device
        self.stream = self._cuda.Stream(device)
        self.handle = int(self.stream.cuda_stream)
        if not self.handle:
            raise EngineError(f"{device}: torch handed out CUDA stream 0 (the legacy default stream) for an engine's "
                              "own stream")

    def synchronize(self) -> None:
        """Wait on the host for the work queued on this stream (set-up only, never per call)."""
        self.stream.synchronize()

    @contextmanager
    def ordered(self) -> Iterator[int]:
        """Inside: the current device is ``device`` and the current torch stream is this one, after it has waited
        for the caller's stream (event, no host sync); yields the handle to launch on. On exit the caller's
        stream waits for this one, so whatever the caller queues next sees the results."""
        cuda = self._cuda
        caller = cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        try:
            with cuda.device(self.device), cuda.stream(self.stream):
                yield self.handle
        finally:
            caller.wait_stream(self.stream)


def check_stream_handle(handle: int, source: str) -> int:
    """``handle`` as an int, refusing 0 (the legacy default stream) with an error naming ``source``."""
    handle = int(handle)
    if not handle:
        raise EngineError(f"{source}: refusing to launch on CUDA stream 0 (the legacy default stream); the engine "
                          "runs on a stream of its own (SideStream)")
    return handle


__all__ = ["SideStream", "check_stream_handle"]
