"""The export layer builds TensorRT plans and the runtime only loads them: ``engine_plan`` passes a plan through
and builds an ONNX export through the engine cache; the runtime backend refuses an ONNX file."""

from __future__ import annotations

import pytest

from ddpg.errors import ConfigError
from ddpg.export import tensorrt_build
from ddpg.export.tensorrt_build import engine_plan
from ddpg.runtime.backends.tensorrt import TensorRTDenoiser
from fake_trt_build import ENV10, fake_trt, tiny_onnx


def test_a_plan_passes_through_untouched(tmp_path):
    plan = tmp_path / "m.plan"
    assert engine_plan(plan) == plan  # no TensorRT needed, nothing read


def test_an_onnx_export_is_built_then_reused_from_the_cache(tmp_path, monkeypatch):
    trt = fake_trt()
    monkeypatch.setattr(tensorrt_build, "require_tensorrt", lambda: trt)
    monkeypatch.setattr(tensorrt_build, "detect_environment", lambda trt, device=None: ENV10)
    onnx_path = tiny_onnx(tmp_path / "m.onnx", batch="1:2:4")
    plan = engine_plan(onnx_path, cache_dir=tmp_path / "cache")
    assert plan.suffix == ".plan" and plan.parent == tmp_path / "cache" and plan.is_file()
    assert engine_plan(onnx_path, cache_dir=tmp_path / "cache") == plan
    assert len([c for c in trt.calls if c[0] == "build_serialized_network"]) == 1


def test_the_runtime_backend_does_not_build(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with pytest.raises(ConfigError, match="an ONNX export, not a TensorRT plan"):
        TensorRTDenoiser(tmp_path / "m.onnx", device="cuda", trt=fake_trt())


def test_the_api_says_which_backend_is_missing_before_building(tmp_path, monkeypatch):
    import sys

    from ddpg.api.denoisers import make_denoiser

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # ``import tensorrt`` raises ImportError
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="backend 'tensorrt' not available: TensorRT is not available here"):
        make_denoiser(None, None, "tensorrt", str(onnx_path), "cpu")
    assert not list(tmp_path.glob("**/*.plan"))
