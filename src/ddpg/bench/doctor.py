"""The probes of ``ddpg doctor``: which backends work on this machine, and why the others do not.

Checks torch (CPU, CUDA), the ONNX exporter (onnx, onnxscript), ONNX Runtime (CPU and CUDA execution
providers), TensorRT (version ≥ 10 and a CUDA GPU) and OpenVINO (its CPU plugin, and the CPU's native bf16 and
int8 support), and lists the GPUs with compute capability and the
NVIDIA driver. Nothing is downloaded or compiled. The command is ``ddpg.cli.doctor``.
"""

from __future__ import annotations

import importlib
import platform
from dataclasses import asdict, dataclass

from ddpg.versions import __version__


@dataclass
class Check:
    """One backend: ``usable`` here or not, its library version, and what was found or what is missing."""

    name: str
    usable: bool
    version: str | None
    detail: str


def _import(name: str):
    """(module, None) or (None, "No module named 'x'")-style reason."""
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # ImportError, or a broken install raising OSError/RuntimeError on import
        return None, str(exc) or type(exc).__name__


def _gpus(torch) -> list[dict]:
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append({"index": index, "name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                     "memory_gib": round(props.total_memory / 2**30, 1)})
    return gpus


def _torch_checks(torch) -> tuple[list[Check], bool]:
    checks = [Check("torch (cpu)", True, torch.__version__, f"{torch.get_num_threads()} threads")]
    if torch.cuda.is_available():
        names = ", ".join(g["name"] for g in _gpus(torch))
        checks.append(Check("torch (cuda)", True, torch.version.cuda, f"CUDA {torch.version.cuda}; {names}"))
        return checks, True
    if torch.version.cuda is None:
        why = "this torch build has no CUDA support (CPU-only wheel)"
    else:
        why = f"torch is built with CUDA {torch.version.cuda} but sees no GPU (no NVIDIA driver/device visible)"
    checks.append(Check("torch (cuda)", False, None, why))
    return checks, False


def _export_check() -> Check:
    onnx, why = _import("onnx")
    if onnx is None:
        return Check("onnx export", False, None, why)
    onnxscript, why = _import("onnxscript")
    if onnxscript is None:
        return Check("onnx export", False, onnx.__version__,
                     f"onnxscript missing ({why}); the dynamo exporter needs it")
    return Check("onnx export", True, onnx.__version__, f"onnx {onnx.__version__}, onnxscript {onnxscript.__version__}")


def _ort_checks(has_cuda: bool) -> list[Check]:
    ort, why = _import("onnxruntime")
    if ort is None:
        return [Check("onnxruntime (cpu)", False, None, why), Check("onnxruntime (cuda)", False, None, why)]
    providers = list(ort.get_available_providers())
    listed = ", ".join(providers)
    checks = [Check("onnxruntime (cpu)", "CPUExecutionProvider" in providers, ort.__version__,
                    f"providers: {listed}")]
    if "CUDAExecutionProvider" not in providers:
        why = f"CUDAExecutionProvider not available (providers: {listed}); install onnxruntime-gpu"
    elif not has_cuda:
        why = "CUDAExecutionProvider is installed but no CUDA GPU is visible"
    else:
        why = ""
    checks.append(Check("onnxruntime (cuda)", not why, ort.__version__, why or f"providers: {listed}"))
    return checks


def _tensorrt_check(has_cuda: bool) -> Check:
    trt, why = _import("tensorrt")
    if trt is None:
        return Check("tensorrt", False, None, why)
    version = str(getattr(trt, "__version__", "unknown"))
    major = version.split(".")[0]
    if not major.isdigit() or int(major) < 10:
        return Check("tensorrt", False, version, f"TensorRT {version} found; ddpg needs TensorRT 10 or 11")
    if not has_cuda:
        return Check("tensorrt", False, version, f"TensorRT {version} found but no CUDA GPU is visible to torch")
    typing = "strongly typed only" if int(major) >= 11 else "weak and strong typing"
    return Check("tensorrt", True, version, f"TensorRT {version} ({typing})")


def _openvino_check() -> Check:
    """OpenVINO's CPU plugin, and what this CPU runs natively (its OPTIMIZATION_CAPABILITIES): BF16 (bf16 IRs
    gain only with it) and INT8 (int8 IRs); NNCF, which int8 exports need."""
    ov, why = _import("openvino")
    if ov is None:
        return Check("openvino (cpu)", False, None, why)
    try:
        core = ov.Core()
        caps = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        cpu = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
    except Exception as exc:  # OpenVINO raises RuntimeError when its CPU plugin cannot load
        return Check("openvino (cpu)", False, ov.__version__, f"the CPU plugin did not load: {exc}")
    nncf, _ = _import("nncf")
    bf16 = "native bf16" if "BF16" in caps else "no native bf16 (a bf16 IR runs no faster than fp32)"
    int8 = "int8" if "INT8" in caps else "no int8"
    return Check("openvino (cpu)", True, ov.__version__,
                 f"{cpu}: {bf16}, {int8} (capabilities {', '.join(caps)}); nncf "
                 f"{nncf.__version__ if nncf is not None else 'missing (int8 exports need it)'}")


def collect() -> dict:
    """The doctor report: ``checks`` (list of Check dicts), ``gpus``, ``driver``, ``python``, ``platform``."""
    import torch

    from ddpg.runtime.backends.tensorrt_env import driver_version

    torch_checks, has_cuda = _torch_checks(torch)
    checks = [*torch_checks, _export_check(), *_ort_checks(has_cuda), _tensorrt_check(has_cuda), _openvino_check()]
    return {"ddpg": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "gpus": _gpus(torch) if has_cuda else [], "driver": driver_version(),
            "checks": [asdict(c) for c in checks]}


def render_text(report: dict) -> str:
    """Plain-text report: one line per backend, then the GPUs and driver."""
    width = max(len(c["name"]) for c in report["checks"])
    lines = [f"ddpg {report['ddpg']} — Python {report['python']} on {report['platform']}"]
    for c in report["checks"]:
        state = "usable" if c["usable"] else "unavailable"
        version = f" {c['version']}" if c["version"] and c["usable"] else ""
        lines.append(f"{c['name']:<{width}}  {state}{version} — {c['detail']}")
    if report["gpus"]:
        for g in report["gpus"]:
            lines.append(f"gpu {g['index']}: {g['name']} (compute capability {g['compute_capability']}, "
                         f"{g['memory_gib']} GiB)")
    else:
        lines.append("gpu: none visible")
    lines.append(f"nvidia driver: {report['driver'] or 'not found (nvidia-smi missing)'}")
    return "\n".join(lines)
