"""TensorRT on this machine: importing it (with an install hint), the GPU an engine is for, one logger per
module, and deserializing a plan. Used by the runtime backend (loading) and by ``ddpg.export.tensorrt_build``
(building); no engine is built here.

TensorRT Python API used: ``Logger(Logger.WARNING)`` and ``Runtime(logger).deserialize_cuda_engine(serialized_engine)``
("the ICudaEngine, or None if it could not be deserialized"),
https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Runtime.html
"""

from __future__ import annotations

import shutil
import subprocess

import torch

from ddpg.engine_sidecar import GpuInfo
from ddpg.errors import ConfigError

TENSORRT_WHEELS = ("tensorrt-cu13", "tensorrt-cu12")  # NVIDIA's pip packages, one per CUDA major


def tensorrt_wheel(cuda_version: str | None) -> str:
    """The TensorRT pip package matching a CUDA version such as torch's ``torch.version.cuda`` ("13.0" →
    ``tensorrt-cu13``); for an unknown CUDA (a CPU torch) the choice, worded for a message."""
    major = str(cuda_version or "").split(".")[0]
    wheel = f"tensorrt-cu{major}"
    return wheel if wheel in TENSORRT_WHEELS else " or ".join(TENSORRT_WHEELS) + " (the one matching your CUDA)"


def require_tensorrt():
    """The ``tensorrt`` module, or ConfigError saying why it cannot be imported."""
    try:
        import tensorrt
    except ImportError as exc:
        raise ConfigError(f"TensorRT is not available here ({exc}); install NVIDIA TensorRT 10 or 11 for your CUDA "
                          f"(pip install {tensorrt_wheel(torch.version.cuda)}) on a machine with an NVIDIA "
                          "GPU") from exc
    return tensorrt


def gpu_info(device=None) -> GpuInfo:
    """Name, compute capability and driver of a CUDA device (torch's view); ConfigError without one."""
    if not torch.cuda.is_available():
        raise ConfigError("TensorRT needs a CUDA GPU, and torch sees none here (torch.cuda.is_available() is False)")
    props = torch.cuda.get_device_properties(torch.device("cuda") if device is None else torch.device(device))
    return GpuInfo(props.name, f"{props.major}.{props.minor}", driver_version())


def driver_version() -> str | None:
    """The NVIDIA driver version from ``nvidia-smi`` (None when it is not on PATH or fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


_LOGGERS: dict[int, object] = {}


def trt_logger(trt):
    """One ``trt.Logger(WARNING)`` per tensorrt module (TensorRT keeps the first logger it is given)."""
    if id(trt) not in _LOGGERS:
        _LOGGERS[id(trt)] = trt.Logger(trt.Logger.WARNING)
    return _LOGGERS[id(trt)]


def deserialize_plan(trt, blob: bytes):
    """The ICudaEngine of a serialized plan, or None when TensorRT rejects it."""
    try:
        return trt.Runtime(trt_logger(trt)).deserialize_cuda_engine(blob)
    except Exception:  # TensorRT raises RuntimeError/TypeError variants for foreign or corrupt plans
        return None

