"""The engine a backend loads for an ``.onnx`` export, by the backend's own plan format (backends whose
capability record says ``plan_from_onnx``): TensorRT builds a plan in the engine cache, OpenVINO converts an IR
in its cache. The export layer builds; the runtime only loads and runs."""

from __future__ import annotations

from pathlib import Path

from ddpg.errors import ConfigError


def _tensorrt_plan(onnx: Path, device: str) -> Path:
    from ddpg.runtime.backends.tensorrt_env import require_tensorrt

    from .tensorrt_build import engine_plan

    try:
        require_tensorrt()
    except ConfigError as exc:
        raise ConfigError(f"backend 'tensorrt' not available: {exc}") from exc
    return engine_plan(onnx, device=device)


def _openvino_ir(onnx: Path, device: str) -> Path:
    from ddpg.runtime.backends.openvino import openvino_module

    from .openvino_cache import openvino_ir

    openvino_module()  # ConfigError naming the extra when it is missing
    return openvino_ir(onnx)


PLAN_BUILDERS = {"tensorrt": _tensorrt_plan, "openvino": _openvino_ir}


def plan_from_onnx(backend: str, onnx: str | Path, device: str) -> Path:
    """The file ``backend`` loads for the ONNX export ``onnx`` (built or found in its cache)."""
    return PLAN_BUILDERS[backend](Path(onnx), device)
