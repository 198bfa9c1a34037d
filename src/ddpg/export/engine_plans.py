"""The engine a backend loads for an ``.onnx`` export, by the backend's own plan format (backends whose
capability record says ``plan_from_onnx``): TensorRT builds a plan in the engine cache, OpenVINO converts an IR
in its cache. The export layer builds; the runtime only loads and runs."""

from __future__ import annotations

from pathlib import Path

from ddpg.errors import ConfigError


def _tensorrt_plan(onnx: Path, device: str, precision: str | None, cache_dir: Path | None) -> Path:
    from ddpg.runtime.backends.tensorrt_env import require_tensorrt

    from .tensorrt_build import engine_plan

    try:
        require_tensorrt()
    except ConfigError as exc:
        raise ConfigError(f"backend 'tensorrt' not available: {exc}") from exc
    return engine_plan(onnx, device=device, cache_dir=cache_dir)  # its precision: the ONNX export's


def _openvino_ir(onnx: Path, device: str, precision: str | None, cache_dir: Path | None) -> Path:
    from ddpg.runtime.backends.openvino import openvino_module

    from .openvino_cache import openvino_ir

    openvino_module()  # ConfigError naming the extra when it is missing
    return openvino_ir(onnx, precision=precision or "fp32", cache_dir=cache_dir)


PLAN_BUILDERS = {"tensorrt": _tensorrt_plan, "openvino": _openvino_ir}
# the precision of the ONNX export each backend's plan of precision P is made from: TensorRT builds the export's own
# precision; OpenVINO converts a float32 export and sets P when it converts (bf16) or quantizes (int8)
ONNX_PRECISION = {"tensorrt": lambda precision: precision, "openvino": lambda precision: "fp32"}


def plan_from_onnx(backend: str, onnx: str | Path, device: str, *, precision: str | None = None,
                   cache_dir: str | Path | None = None) -> Path:
    """The file ``backend`` loads for the ONNX export ``onnx`` (built or found in its cache, ``cache_dir`` or the
    default); ``precision``: OpenVINO's IR precision (fp32 | bf16; default fp32), TensorRT takes the export's."""
    return PLAN_BUILDERS[backend](Path(onnx), device, precision, None if cache_dir is None else Path(cache_dir))


def onnx_precision(backend: str, precision: str) -> str:
    """The precision of the ONNX export that ``backend``'s plan of ``precision`` is made from."""
    return ONNX_PRECISION[backend](precision)
