"""Every backend's capability record (:class:`~ddpg.models.denoiser.BackendCapabilities`), by name: what code
outside the backends reads instead of comparing a backend's name."""

from __future__ import annotations

from ddpg.errors import ConfigError
from ddpg.models.denoiser import TORCH_CAPABILITIES, BackendCapabilities

# ONNX Runtime: its CUDA provider captures the engine call itself (fixed-batch exports)
ONNXRUNTIME_CAPABILITIES = BackendCapabilities(grad=False, engine_file=True, engine_call_graph=True,
                                               plan_from_onnx=False)
# TensorRT: a fixed-shape engine's call is captured with the whole sampler step (the denoiser's graph_safe)
TENSORRT_CAPABILITIES = BackendCapabilities(grad=False, engine_file=True, engine_call_graph=False, plan_from_onnx=True)
# OpenVINO: an ``.onnx`` export is first converted into an IR in the engine cache (fp32; bf16 and int8 IRs come
# from ``ddpg export --format openvino``); CPU only, no graphs
OPENVINO_CAPABILITIES = BackendCapabilities(grad=False, engine_file=True, engine_call_graph=False, plan_from_onnx=True)
CAPABILITIES = {"torch": TORCH_CAPABILITIES, "onnxruntime": ONNXRUNTIME_CAPABILITIES,
                "tensorrt": TENSORRT_CAPABILITIES, "openvino": OPENVINO_CAPABILITIES}
BACKENDS = tuple(CAPABILITIES)


def backend_capabilities(backend: str) -> BackendCapabilities:
    """The record of backend ``backend``; ConfigError naming the backends for an unknown one."""
    if backend not in CAPABILITIES:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return CAPABILITIES[backend]


__all__ = ["BACKENDS", "CAPABILITIES", "backend_capabilities"]
