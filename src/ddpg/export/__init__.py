"""Deployment: export a prior's ε-network to ONNX (``ddpg export``), check it against PyTorch, and describe it
in metadata that the runtime backends read (see ddpg.engine_metadata for the ``ddpg.*`` keys)."""

from ddpg.lazy import lazy_exports

# each public name → its module, imported on first use (the command line reads the defaults without torch)
_HOMES = {"BatchProfile": "ddpg.engine_metadata", "EngineError": "ddpg.engine_metadata",
          "EngineInfo": "ddpg.engine_metadata", "check_engine_matches": "ddpg.engine_metadata",
          "read_metadata": "ddpg.engine_metadata", "DEFAULT_BATCH": ".defaults", "DEFAULT_OPSET": ".defaults",
          "OPSETS": ".defaults", "PRECISIONS": "ddpg.precisions", "ClassEpsGraph": ".onnx_export",
          "EpsGraph": ".onnx_export", "ExportError": ".onnx_export", "ExportResult": ".onnx_export",
          "export_module": ".onnx_export", "export_prior": ".onnx_export", "DEFAULT_TIMESTEPS": ".validate",
          "ValidationReport": ".validate", "default_rtol": ".validate", "validate_onnx": ".validate"}
__all__ = sorted(_HOMES)
__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
