"""The ONNX Runtime denoiser backend: parity with the torch backend (one forward and a whole DDPG run), dynamic
batch, shape checks, metadata checks against presets, the backend factory. CUDA tests skip without a GPU."""

from __future__ import annotations

import contextlib

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from conftest import FIXTURES, rel_err
from ddpg.errors import ConfigError, DdpgError
from ddpg.export import EngineError, check_engine_matches, export_prior, read_metadata
from ddpg.models import as_denoiser, create_prior
from ddpg.operators import make_operator
from ddpg.runtime.backends import BACKENDS, get_backend, make_denoiser
from ddpg.runtime.backends.cuda_stream import SideStream
from ddpg.runtime.backends.onnxruntime import OrtDenoiser
from ddpg.schedule import Schedule
from drawn_noise import ddpg_with_drawn_noise

ort = pytest.importorskip("onnxruntime")
HAS_CUDA_EP = torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()
cuda_only = pytest.mark.skipif(not HAS_CUDA_EP, reason="needs a CUDA GPU and onnxruntime-gpu")

FP32_TOL = 1e-5  # relative L2, ONNX Runtime vs PyTorch, float32 (docs/deployment.md §3)
RUN_TOL = 1e-4  # relative L2 of a whole 10-step DDPG run, ONNX Runtime vs PyTorch backend


@pytest.fixture(scope="module")
def ddpm_small():
    fixture = torch.load(FIXTURES / "priors" / "ddpm_small.pt", weights_only=True)
    prior = create_prior(fixture["config"])
    prior.load_state_dict(fixture["state_dict"], strict=True)
    return fixture, prior.eval()


def test_matches_fixture_and_torch_at_other_batch_sizes(ddpm_engine, ddpm_small):
    fixture, prior = ddpm_small
    den = OrtDenoiser(ddpm_engine)
    assert rel_err(den(fixture["x"], fixture["t"]), fixture["out"]) < FP32_TOL
    for batch in (1, 3, 4):  # exported at batch 2
        x, t = torch.randn(batch, 3, 32, 32), torch.linspace(999, 0, batch)
        eps = den(x, t)
        assert eps.dtype == torch.float32 and eps.shape == (batch, 3, 32, 32)
        with torch.no_grad():
            assert rel_err(eps, prior(x, t)) < FP32_TOL


def test_metadata_gives_schedule_config_and_bounds(ddpm_engine, ddpm_small):
    fixture, _ = ddpm_small
    den = OrtDenoiser(ddpm_engine)
    assert den.config["ch_mult"] == fixture["config"]["ch_mult"]
    np.testing.assert_allclose(den.schedule.betas, Schedule.from_config({}).betas)
    assert den.name is None and den.precision == "fp32" and not den.capabilities.grad
    with pytest.raises(EngineError, match=r"batch 1\.\.4, got batch 5"):
        den(torch.zeros(5, 3, 32, 32), torch.zeros(5))
    with pytest.raises(EngineError, match="exported for 32×32 images, got 64×64"):
        den(torch.zeros(1, 3, 64, 64), torch.zeros(1))
    with pytest.raises(EngineError, match="t has 2 values for a batch of 3"):
        den(torch.zeros(3, 3, 32, 32), torch.zeros(2))


def test_ddpg_run_matches_torch_backend(ddpm_engine, ddpm_small):
    """10 DDPG steps on a 32-px FFT super-resolution problem, same x_T and noise on both backends."""
    _, prior = ddpm_small
    run = ddpg_with_drawn_noise(make_operator("sr_bicubic", 32, scale=4, impl="fft"), batch=2, seed=3, steps=10)
    ref = run(as_denoiser(prior))
    got = run(make_denoiser("onnxruntime", engine=ddpm_engine))
    assert torch.isfinite(got).all()
    assert rel_err(got, ref) < RUN_TOL


def test_engine_must_match_preset(ddpm_engine):
    info = read_metadata(ddpm_engine)
    check_engine_matches(info, None, Schedule.from_config({}))  # no prior name asked, same schedule: fine
    with pytest.raises(EngineError, match="custom \\(unnamed\\) prior but the preset needs prior 'celeba_hq'"):
        check_engine_matches(info, "celeba_hq", None)
    with pytest.raises(EngineError, match="diffusion schedule"):
        check_engine_matches(info.raw, None, {"beta_end": 0.03})
    named = dict(info.raw, **{"ddpg.prior": "face64"})
    check_engine_matches(named, "face64", {"beta_schedule": "linear"})
    with pytest.raises(EngineError, match="holds 'face64' but the preset needs prior 'ffhq256'"):
        check_engine_matches(named, "ffhq256")


def test_foreign_onnx_is_refused(tmp_path):
    node = helper.make_node("Identity", ["x"], ["eps"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("eps", TensorProto.FLOAT, [1, 3, 32, 32])])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(EngineError, match="no ddpg metadata"):
        OrtDenoiser(path)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(EngineError, match="not a readable ONNX model"):
        make_denoiser("onnxruntime", engine=tmp_path / "junk.onnx")


def test_factory(ddpm_small, ddpm_engine, tmp_path):
    _, prior = ddpm_small
    assert BACKENDS == ("torch", "onnxruntime", "tensorrt", "openvino")
    den = make_denoiser("torch", prior=prior)
    assert den.backend == "torch" and den.prior is prior
    with pytest.raises(ConfigError, match="unknown backend 'tvm'"):
        get_backend("tvm")
    with pytest.raises(ConfigError, match="needs an engine file"):
        make_denoiser("onnxruntime")
    with pytest.raises(ConfigError, match="file not found"):
        make_denoiser("onnxruntime", engine=tmp_path / "missing.onnx")
    with pytest.raises(ConfigError, match="backend=onnxruntime: reads the prior from the engine file"):
        make_denoiser("onnxruntime", prior="face64", engine=ddpm_engine)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(DdpgError, match="TensorRT is not available|backend 'tensorrt' not available"):
            make_denoiser("tensorrt", engine=ddpm_engine, device="cuda")
    with pytest.raises(ConfigError, match="not class-conditional"):
        make_denoiser("onnxruntime", engine=ddpm_engine, class_labels=3)
    with pytest.raises(DdpgError, match="cpu or cuda"):
        make_denoiser("onnxruntime", engine=ddpm_engine, device="meta")
    # threads, as for OpenVINO: ORT's intra-op threads on the CPU (default: the --threads count)
    assert make_denoiser("onnxruntime", engine=ddpm_engine, threads=1).session.get_session_options() \
        .intra_op_num_threads == 1
    with pytest.raises(ConfigError, match="threads 0: must be >= 1"):
        make_denoiser("onnxruntime", engine=ddpm_engine, threads=0)


def test_cuda_requested_without_cuda_fails_clearly(ddpm_engine):
    if HAS_CUDA_EP:
        pytest.skip("CUDA is available here")
    with pytest.raises(DdpgError, match="CUDA|cuda"):
        OrtDenoiser(ddpm_engine, device="cuda")


def test_cuda_session_preloads_libraries_and_refuses_stream_zero(ddpm_engine, monkeypatch):
    """ORT's CUDA provider reads user_compute_stream 0 (torch's default stream) as "none" and would run on a
    stream of its own; make_session refuses it before building a session (CUDA provider faked as present)."""
    from ddpg.runtime.backends import onnxruntime as backend

    preloads = []
    backend.preload_cuda_libraries.cache_clear()
    monkeypatch.setattr(ort, "preload_dlls", lambda: preloads.append(1), raising=False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [backend.CUDA_EP, backend.CPU_EP])
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: pytest.fail("no session for stream 0"))
    for _ in range(2):
        with pytest.raises(ConfigError, match="stream 0"):
            backend.make_session(ddpm_engine, "cuda", stream=0)
    assert preloads == [1]  # the CUDA libraries are preloaded once, before the first CUDA session
    backend.preload_cuda_libraries.cache_clear()


class _FakeStream:
    """A stand-in for torch.cuda.Stream that logs the orderings asked of it."""

    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def wait_stream(self, other: _FakeStream) -> None:
        self.log.append(("wait", self.name, other.name))


def test_cuda_run_keeps_buffer_traffic_on_ort_stream(monkeypatch):
    """The bound buffers are written, run and read on ORT's stream only (a caller that switches streams between
    calls cannot overwrite them while an earlier run still reads them), with the caller's stream ordered before
    and after, and the result handed over with record_stream. CUDA faked: streams log, the session doubles x."""
    from ddpg.runtime.backends import onnxruntime as backend

    log: list = []
    caller, ort_stream = _FakeStream("caller", log), _FakeStream("ort", log)
    current = [caller]

    @contextlib.contextmanager
    def use_stream(stream):
        current.append(stream)
        yield
        current.pop()

    class Session:
        def run_with_iobinding(self, binding, run_options):
            log.append(("run", current[-1].name, binding, run_options))
            io.eps.copy_(io.x * 2)

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current[-1])
    monkeypatch.setattr(torch.cuda, "stream", use_stream)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, s: log.append(("record", s.name)), raising=False)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: ort_stream)
    ort_stream.cuda_stream = 7
    io = backend.CudaIO(torch.zeros(2, 3, 4, 4), torch.zeros(2), None, torch.zeros(2, 3, 4, 4), "binding")
    x = torch.randn(2, 3, 4, 4)
    eps = backend.run_io_binding(Session(), io, SideStream(torch.device("cuda", 0)), "opts", x,
                                 torch.tensor([1.0, 2.0]), cuda_graph=False)
    assert torch.equal(eps, 2 * x) and eps.data_ptr() != io.eps.data_ptr() and torch.equal(io.t, torch.tensor([1., 2.]))
    assert log == [("wait", "ort", "caller"), ("run", "ort", "binding", "opts"), ("wait", "caller", "ort"),
                   ("record", "caller")]


# ----------------------------------------------------------------------------------------------------- CUDA only
@cuda_only
def test_cuda_io_binding_matches_cpu(ddpm_engine, ddpm_small):
    _, prior = ddpm_small
    den = OrtDenoiser(ddpm_engine, device="cuda")
    assert den.session.get_providers()[0] == "CUDAExecutionProvider"
    granted = den.session.get_provider_options()["CUDAExecutionProvider"]
    assert granted["has_user_compute_stream"] == "1" and int(granted["user_compute_stream"]) == den.stream_handle
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([999.0, 500.0, 0.0])
    with torch.no_grad():
        ref = prior(x, t)
    eps = den(x.cuda(), t.cuda())
    assert eps.is_cuda and eps.dtype == torch.float32
    assert rel_err(eps.cpu(), ref) < FP32_TOL
    first = eps.clone()
    again = den(x.cuda(), t.cuda())  # buffers reused; earlier results are not overwritten
    assert torch.equal(first, eps) and torch.equal(again, eps)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # another current stream: ordered by events, same numbers
        other = den(x.cuda(), t.cuda())
    torch.cuda.synchronize()
    assert torch.equal(other, eps)


@cuda_only
def test_cuda_graph_mode_needs_fixed_shape_and_replays(ddpm_small, tmp_path):
    fixture, prior = ddpm_small
    out = tmp_path / "fixed.onnx"
    export_prior(fixture["config"], checkpoint=FIXTURES / "priors" / "ddpm_small.pt", out=out, batch="2",
                 validate=False)
    den = OrtDenoiser(out, device="cuda", cuda_graph=True)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([900.0, 10.0])
    with torch.no_grad():
        ref = prior(x, t)
    for _ in range(3):  # capture, then replays
        assert rel_err(den(x.cuda(), t.cuda()).cpu(), ref) < FP32_TOL
    x2 = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_err(den(x2.cuda(), t.cuda()).cpu(), prior(x2, t)) < FP32_TOL


@cuda_only
def test_cuda_latency_benchmark(ddpm_engine):
    """Reports p50/p90 of one UNet call with CUDA events (no assertion on speed, only that it runs)."""
    den = OrtDenoiser(ddpm_engine, device="cuda")
    x, t = torch.randn(4, 3, 32, 32, device="cuda"), torch.full((4,), 500.0, device="cuda")
    for _ in range(5):
        den(x, t)
    times = []
    for _ in range(50):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        den(x, t)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    p50, p90 = np.percentile(times, [50, 90])
    print(f"ORT CUDA ddpm_small batch 4: p50 {p50:.3f} ms, p90 {p90:.3f} ms")
    assert p50 > 0
