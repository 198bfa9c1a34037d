"""Deployment: export a prior's ε-network to ONNX (``ddpg export``), check it against PyTorch, and describe it
in metadata that the runtime backends read (see ddpg.engine_metadata for the ``ddpg.*`` keys)."""

from ddpg.engine_metadata import BatchProfile, EngineError, EngineInfo, check_engine_matches, read_metadata

from .onnx_export import (
    DEFAULT_BATCH,
    DEFAULT_OPSET,
    OPSETS,
    PRECISIONS,
    ClassEpsGraph,
    EpsGraph,
    ExportError,
    ExportResult,
    export_module,
    export_prior,
)
from .validate import DEFAULT_TIMESTEPS, ValidationReport, default_rtol, validate_onnx

__all__ = [
    "DEFAULT_BATCH", "DEFAULT_OPSET", "DEFAULT_TIMESTEPS", "OPSETS", "PRECISIONS", "BatchProfile", "ClassEpsGraph",
    "EngineError", "EngineInfo", "EpsGraph", "ExportError", "ExportResult", "ValidationReport",
    "check_engine_matches", "default_rtol", "export_module", "export_prior", "read_metadata", "validate_onnx",
]
