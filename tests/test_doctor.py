"""`ddpg doctor`: every backend gets a line saying usable or why not; fake modules and a fake GPU stand in for
the combinations this machine does not have."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import torch
import typer
from typer.testing import CliRunner

from ddpg.bench import doctor
from ddpg.cli.doctor import doctor_command

NAMES = ["torch (cpu)", "torch (cuda)", "onnx export", "onnxruntime (cpu)", "onnxruntime (cuda)", "tensorrt",
         "openvino (cpu)"]


def by_name(report) -> dict:
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture
def fake_gpu(monkeypatch):
    props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, total_memory=80 * 2**30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setattr("ddpg.runtime.backends.tensorrt_env.driver_version", lambda: "550.54.15")


def test_report_covers_every_backend_here():
    report = doctor.collect()
    checks = by_name(report)
    assert list(checks) == NAMES
    assert checks["torch (cpu)"]["usable"] and checks["torch (cpu)"]["version"] == torch.__version__
    assert all(c["detail"] for c in report["checks"])  # a reason for every line, usable or not
    if not torch.cuda.is_available():
        assert not checks["torch (cuda)"]["usable"] and not checks["tensorrt"]["usable"]
        assert report["gpus"] == []
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        assert checks["tensorrt"]["detail"] == str(exc)
        assert f"tensorrt            unavailable — {exc}" in doctor.render_text(report)


@pytest.mark.parametrize("version, usable, detail", [
    ("10.9.0.34", True, "TensorRT 10.9.0.34 (weak and strong typing)"),
    ("11.4.0.106", True, "TensorRT 11.4.0.106 (strongly typed only)"),
    ("8.6.1", False, "TensorRT 8.6.1 found; ddpg needs TensorRT 10 or 11"),
])
def test_tensorrt_versions_with_a_gpu(monkeypatch, fake_gpu, version, usable, detail):
    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(__version__=version))
    report = doctor.collect()
    check = by_name(report)["tensorrt"]
    assert (check["usable"], check["detail"]) == (usable, detail)
    assert report["gpus"] == [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
                               "memory_gib": 80.0}]
    assert report["driver"] == "550.54.15"
    text = doctor.render_text(report)
    assert "gpu 0: NVIDIA H100 80GB HBM3 (compute capability 9.0, 80.0 GiB)" in text
    assert "nvidia driver: 550.54.15" in text


def test_tensorrt_without_gpu_and_missing_onnxruntime(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(__version__="10.9.0.34"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    checks = by_name(doctor.collect())
    assert checks["tensorrt"] == {"name": "tensorrt", "usable": False, "version": "10.9.0.34",
                                  "detail": "TensorRT 10.9.0.34 found but no CUDA GPU is visible to torch"}
    for name in ("onnxruntime (cpu)", "onnxruntime (cuda)"):
        assert not checks[name]["usable"] and "onnxruntime" in checks[name]["detail"]


def test_onnxruntime_cuda_provider_needs_a_gpu(monkeypatch):
    fake_ort = SimpleNamespace(__version__="1.31.1",
                               get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setitem(sys.modules, "onnxruntime", fake_ort)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert by_name(doctor.collect())["onnxruntime (cuda)"]["detail"] == \
        "CUDAExecutionProvider is installed but no CUDA GPU is visible"


def test_onnxruntime_cuda_provider_usable_with_gpu(monkeypatch, fake_gpu):
    fake_ort = SimpleNamespace(__version__="1.31.1",
                               get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setitem(sys.modules, "onnxruntime", fake_ort)
    checks = by_name(doctor.collect())
    assert checks["onnxruntime (cuda)"]["usable"] and checks["torch (cuda)"]["usable"]


def test_command_text_and_json():
    app = typer.Typer()
    app.command()(doctor_command)
    runner = CliRunner()
    result = runner.invoke(app, ["--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [c["name"] for c in report["checks"]] == NAMES
    result = runner.invoke(app, [])
    assert result.exit_code == 0 and "tensorrt" in result.output and "torch (cpu)" in result.output


def test_openvino_reports_the_cpus_bf16_and_int8_support(monkeypatch):
    class Core:
        def get_property(self, device, name):
            return {"OPTIMIZATION_CAPABILITIES": ["FP32", "INT8"], "FULL_DEVICE_NAME": "Some CPU"}[name]

    monkeypatch.setitem(sys.modules, "openvino", SimpleNamespace(__version__="2026.4.1", Core=Core))
    monkeypatch.setitem(sys.modules, "nncf", None)
    check = by_name(doctor.collect())["openvino (cpu)"]
    assert check["usable"] and check["version"] == "2026.4.1"
    assert check["detail"] == ("Some CPU: no native bf16 (a bf16 IR runs no faster than fp32), int8 (capabilities "
                               "FP32, INT8); nncf missing (int8 exports need it)")
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert not by_name(doctor.collect())["openvino (cpu)"]["usable"]
