"""The TensorRT denoiser: profile selection and shape refusal (pure), context/buffer binding against a fake
engine on CPU tensors, errors without TensorRT — and, where tensorrt and a CUDA GPU exist, the whole path end to
end (export a tiny prior, build, run, compare with PyTorch; cache hit; CUDA graph)."""

from __future__ import annotations

import pytest
import torch

from conftest import rel_err
from ddpg.engine_metadata import EngineError
from ddpg.engine_sidecar import ShapeProfile
from ddpg.errors import ConfigError, DdpgError
from ddpg.runtime.backends.tensorrt import Bindings, EngineShapes, TensorRTDenoiser, torch_dtype
from fake_trt_engine import FakeEngine, fake_trt

FIXED = ShapeProfile.from_mapping({"x": ((1, 3, 32, 32),) * 3, "t": ((1,),) * 3})
RANGE = ShapeProfile.from_mapping({"x": ((2, 3, 32, 32), (3, 3, 32, 32), (4, 3, 32, 32)), "t": ((2,), (3,), (4,))})


def test_profile_selection_and_shape_refusal():
    shapes = EngineShapes([FIXED, RANGE], "e.plan")
    assert [shapes.select((b, 3, 32, 32)) for b in (1, 2, 4)] == [0, 1, 1]
    assert not shapes.fixed and shapes.size == (32, 32)
    with pytest.raises(EngineError, match=r"no optimization profile of this engine accepts x \(5, 3, 32, 32\) "
                                          r"\(it takes x: batch 1, 3×32×32; x: batch 2\.\.4, 3×32×32\)"):
        shapes.select((5, 3, 32, 32))
    with pytest.raises(EngineError, match=r"x must be \(B, 3, H, W\), got \(1, 1, 32, 32\)"):
        shapes.select((1, 1, 32, 32))
    fixed = EngineShapes([FIXED], "f.plan")
    assert fixed.fixed
    with pytest.raises(EngineError, match=r"f\.plan: this engine was built for the fixed shape \(1, 3, 32, 32\) "
                                          r"only, got x \(1, 3, 64, 64\)"):
        fixed.select((1, 3, 64, 64))
    with pytest.raises(EngineError, match="records no optimization profiles"):
        EngineShapes([], "g.plan")


def test_bindings_one_context_per_profile_buffers_bound_once():
    trt = fake_trt()
    engine = FakeEngine(trt)
    shapes = EngineShapes([FIXED, RANGE], "e.plan")
    bindings = Bindings(trt, engine, shapes, torch.device("cpu"), stream=lambda: 1234,
                        synchronize=lambda: engine.log.append(("synchronize",)))
    assert engine.log == [("profile", 0, 1234), ("profile", 1, 1234), ("synchronize",)]  # sync before any enqueue
    for slot, ctx, largest in zip(bindings.slots, engine.contexts, (1, 4), strict=True):
        assert slot.buffers["x"].shape == (largest, 3, 32, 32) and slot.buffers["t"].shape == (largest,)
        assert ctx.addresses == {n: slot.buffers[n].data_ptr() for n in ("x", "t", "eps")}
        ctx.buffers = slot.buffers
    addresses = [dict(c.addresses) for c in engine.contexts]

    x, t = torch.randn(3, 3, 32, 32), torch.tensor([990.0, 500.0, 0.0])
    slot = bindings.prepare(shapes.select(x.shape), 3)
    bindings.load(slot, {"x": x, "t": t})
    bindings.enqueue(slot)
    out = bindings.output(slot, 3)
    torch.testing.assert_close(out, 0.5 * x + t[:, None, None, None], rtol=0, atol=0)
    assert out.data_ptr() == slot.buffers["eps"].data_ptr()  # a view of the bound buffer, no copy
    engine.log.clear()
    bindings.prepare(1, 3)  # same batch: no new shapes
    bindings.prepare(1, 2)
    assert engine.log == [("shape", "x", (2, 3, 32, 32)), ("shape", "t", (2,))]
    assert [dict(c.addresses) for c in engine.contexts] == addresses  # never rebound
    slot = bindings.prepare(0, 1)
    bindings.load(slot, {"x": x[:1], "t": t[:1]})
    bindings.enqueue(slot)
    assert engine.log[-1] == ("execute", 1234)
    torch.testing.assert_close(bindings.output(slot, 1), 0.5 * x[:1] + 990.0, rtol=0, atol=0)


def test_bindings_refuse_engines_that_do_not_match_the_export():
    trt = fake_trt()
    shapes = EngineShapes([FIXED, RANGE], "e.plan")
    other_io = FakeEngine(trt, io=(("x", "in", "f32"), ("eps", "out", "f32")))
    with pytest.raises(EngineError, match=r"engine I/O \['x'\] → \['eps'\] differs from the export's"):
        Bindings(trt, other_io, shapes, torch.device("cpu"), stream=lambda: 0)
    with pytest.raises(EngineError, match="the engine has 1 optimization profiles, its sidecar 2"):
        Bindings(trt, FakeEngine(trt, profiles=1), shapes, torch.device("cpu"), stream=lambda: 0)
    with pytest.raises(EngineError, match=r"e\.plan: TensorRT refused optimization profile 0 \(Error in set "
                                          r"optimization profile async\.\)"):
        Bindings(trt, FakeEngine(trt, refuse_profile=True), shapes, torch.device("cpu"), stream=lambda: 1234)
    odd = FakeEngine(trt, io=(("x", "in", "fp4"), ("t", "in", "f32"), ("eps", "out", "f32")))
    with pytest.raises(EngineError, match="engine tensor type fp4 has no torch equivalent"):
        Bindings(trt, odd, shapes, torch.device("cpu"), stream=lambda: 0)
    assert torch_dtype(trt, "i64") is torch.int64 and torch_dtype(trt, "f16") is torch.float16


def test_denoiser_without_tensorrt_or_cuda_fails_clearly(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        with pytest.raises(ConfigError, match=f"backend 'tensorrt' not available: TensorRT is not available here "
                                              f"\\({exc}\\)"):
            TensorRTDenoiser(tmp_path / "m.plan")
        from ddpg.runtime.backends import make_denoiser

        (tmp_path / "m.plan").write_bytes(b"x")
        with pytest.raises(DdpgError, match="backend 'tensorrt' not available"):
            make_denoiser("tensorrt", engine=tmp_path / "m.plan", device="cuda")
    with pytest.raises(ConfigError, match="runs on CUDA devices only"):
        TensorRTDenoiser(tmp_path / "m.plan", device="cpu", trt=fake_trt())


# --- end to end, where TensorRT and a GPU exist ----------------------------------------------------------------

TINY_DDPM = {"kind": "ddpm", "name": "tiny_ddpm", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
             "attn_resolutions": [16], "dropout": 0.0, "resamp_with_conv": True, "image_size": 32}


@pytest.fixture(scope="module")
def gpu_trt():
    trt = pytest.importorskip("tensorrt", reason="needs the tensorrt module (NVIDIA TensorRT 10/11 Python "
                                                 "package) — No module named 'tensorrt'")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    return trt


@pytest.mark.cuda
def test_end_to_end_export_build_run_matches_torch(gpu_trt, tmp_path):
    from ddpg.export import export_prior
    from ddpg.export.onnx_export import EpsGraph, random_prior
    from ddpg.export.tensorrt_build import build_engine

    onnx_path = tmp_path / "tiny.onnx"
    export_prior(TINY_DDPM, out=onnx_path, random_weights=True, batch="1:2:4", validate=False)
    record = build_engine(onnx_path, out=tmp_path / "tiny.plan", cache_dir=tmp_path / "cache")
    assert not record.cache_hit and record.path.is_file()
    assert build_engine(onnx_path, out=tmp_path / "tiny.plan", cache_dir=tmp_path / "cache").cache_hit

    reference = EpsGraph(random_prior(TINY_DDPM)).cuda().eval()
    denoiser = TensorRTDenoiser(record.path)
    assert denoiser.name == "tiny_ddpm" and denoiser.schedule.num_timesteps == 1000
    for batch in (1, 3, 4):
        x = torch.randn(batch, 3, 32, 32, device="cuda")
        t = torch.linspace(999, 0, batch, device="cuda")
        with torch.no_grad():
            want = reference(x, t)
        got = denoiser(x, t)
        assert got.dtype == torch.float32 and got.device == x.device
        assert rel_err(got, want) < 1e-4  # fp32 engine with TF32 off
    with pytest.raises(EngineError, match=r"accepts x \(5, 3, 32, 32\)"):
        denoiser(torch.randn(5, 3, 32, 32, device="cuda"), torch.zeros(5, device="cuda"))

    fixed = build_engine(onnx_path, out=tmp_path / "fixed.plan", cache_dir=tmp_path / "cache",
                         profiles={"x": ((2, 3, 32, 32),) * 3, "t": ((2,),) * 3})
    graphed = TensorRTDenoiser(fixed.path, cuda_graph=True)
    for _ in range(3):  # capture on the first call, replay afterwards, new inputs each time
        x, t = torch.randn(2, 3, 32, 32, device="cuda"), torch.tensor([900.0, 10.0], device="cuda")
        with torch.no_grad():
            assert rel_err(graphed(x, t), reference(x, t)) < 1e-4
    with pytest.raises(EngineError, match="fixed shape"):
        graphed(torch.randn(1, 3, 32, 32, device="cuda"), torch.zeros(1, device="cuda"))


@pytest.mark.cuda
def test_end_to_end_fp16_engine_from_a_mixed_precision_export(gpu_trt, tmp_path):
    from ddpg.export import export_prior
    from ddpg.export.onnx_export import EpsGraph, random_prior
    from ddpg.export.tensorrt_build import build_engine

    onnx_path = tmp_path / "tiny16.onnx"
    export_prior(TINY_DDPM, out=onnx_path, random_weights=True, batch="2", precision="fp16", validate=False)
    record = build_engine(onnx_path, out=tmp_path / "tiny16.plan", cache_dir=tmp_path / "cache")
    assert record.plan.precision == "fp16"
    x, t = torch.randn(2, 3, 32, 32, device="cuda"), torch.tensor([999.0, 500.0], device="cuda")
    with torch.no_grad():
        want = EpsGraph(random_prior(TINY_DDPM)).cuda().eval()(x, t)
    assert rel_err(TensorRTDenoiser(record.path)(x, t), want) < 1e-2
