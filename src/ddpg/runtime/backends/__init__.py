"""Denoiser backends: the same ``denoiser(x_t, t) -> eps`` interface over PyTorch, ONNX Runtime, TensorRT or
OpenVINO.

``make_denoiser("torch", prior="face64")``, ``make_denoiser("onnxruntime", engine="model.onnx", device="cuda")``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ddpg.errors import ConfigError, ParameterError
from ddpg.models import as_denoiser, load_prior

from .capabilities import BACKENDS, backend_capabilities


def _torch_backend(*, prior=None, checkpoint: str | Path | None = None, device: str | torch.device = "cpu",
                   class_labels=None, **options):
    """``prior``: an nn.Module, or a name / YAML path / config dict loaded with ``load_prior``."""
    if options:
        raise ConfigError(f"backend 'torch' takes no options {sorted(options)}")
    if prior is None:
        raise ConfigError("backend 'torch' needs a prior (name, YAML or module)")
    module = prior if isinstance(prior, torch.nn.Module) else load_prior(prior, checkpoint, device=device)
    return as_denoiser(module, class_labels=class_labels)


def _engine_path(engine, backend: str) -> Path:
    if engine is None:
        raise ParameterError("engine", None, f"backend {backend!r} needs an engine file")
    path = Path(engine)
    if not path.is_file():
        raise ParameterError("engine", path, "file not found")
    return path


def _onnxruntime_backend(*, engine=None, device: str | torch.device = "cpu", class_labels=None, **options):
    from .onnxruntime import OrtDenoiser

    return OrtDenoiser(_engine_path(engine, "onnxruntime"), device=device, class_labels=class_labels, **options)


def _tensorrt_backend(*, engine=None, device: str | torch.device = "cuda", class_labels=None, **options):
    try:
        from .tensorrt import TensorRTDenoiser
    except ImportError as exc:
        raise ConfigError(f"backend 'tensorrt' not available: {exc}") from exc
    return TensorRTDenoiser(_engine_path(engine, "tensorrt"), device=device, class_labels=class_labels, **options)


def _openvino_backend(*, engine=None, device: str | torch.device = "cpu", class_labels=None, **options):
    from .openvino import OpenVINODenoiser

    return OpenVINODenoiser(_engine_path(engine, "openvino"), device=device, class_labels=class_labels, **options)


def get_backend(name: str) -> Callable[..., object]:
    """The constructor of backend ``name`` (keyword arguments as :func:`make_denoiser`)."""
    backend_capabilities(name)  # an unknown name is refused, naming the backends
    constructors = {"torch": _torch_backend, "onnxruntime": _onnxruntime_backend, "tensorrt": _tensorrt_backend,
                    "openvino": _openvino_backend}
    return constructors[name]


def make_denoiser(backend: str, *, prior=None, engine: str | Path | None = None,
                  device: str | torch.device = "cpu", checkpoint: str | Path | None = None,
                  class_labels: torch.Tensor | int | None = None, **options):
    """A denoiser on ``backend``: "torch" (``prior`` + optional ``checkpoint``), "onnxruntime", "tensorrt" or
    "openvino" (``engine`` file; prior, schedule and config come from its metadata). ``options`` go to the backend
    (onnxruntime: ``cuda_graph``, ``tf32``, ``provider_options``, ``sess_options``, ``threads``; openvino:
    ``threads``, ``performance_hint``)."""
    if backend == "torch":
        return _torch_backend(prior=prior, checkpoint=checkpoint, device=device, class_labels=class_labels,
                              **options)
    if prior is not None or checkpoint is not None:
        raise ParameterError("backend", backend, "reads the prior from the engine file; do not pass a prior/checkpoint "
                                                 "(use check_engine_matches to compare it with a preset)")
    return get_backend(backend)(engine=engine, device=device, class_labels=class_labels, **options)


__all__ = ["BACKENDS", "backend_capabilities", "get_backend", "make_denoiser"]
