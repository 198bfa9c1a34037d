"""Stand-ins for CUDA streams and devices, so the CUDA paths run on the CPU (test_gpu_readiness, test_capabilities):
``torch.cuda`` calls replaced by recorders."""

from __future__ import annotations

import contextlib

import torch


class Stream:
    """A stand-in CUDA stream: a handle and a log of the waits."""

    def __init__(self, handle: int, log: list):
        self.cuda_stream, self.log = handle, log

    def wait_stream(self, other: Stream) -> None:
        self.log.append(("wait", self.cuda_stream, other.cuda_stream))

    def synchronize(self) -> None:
        self.log.append(("synchronize", self.cuda_stream))


def fake_cuda(monkeypatch, log: list, *, default_handle: int = 0, new_handle: int = 77) -> list:
    """torch.cuda calls replaced by recorders: the caller's current stream is the legacy default stream (handle 0,
    as in a plain restore), new streams get ``new_handle``. Returns the stack of current streams."""
    current = [Stream(default_handle, log)]

    @contextlib.contextmanager
    def use_stream(stream):
        current.append(stream)
        log.append(("stream", stream.cuda_stream))
        yield
        current.pop()

    @contextlib.contextmanager
    def use_device(device):
        log.append(("device", str(device)))
        yield
        log.append(("device_exit", str(device)))

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current[-1])
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: Stream(new_handle, log))
    monkeypatch.setattr(torch.cuda, "stream", use_stream)
    monkeypatch.setattr(torch.cuda, "device", use_device)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, s: log.append(("record", s.cuda_stream)),
                        raising=False)
    return current
