"""The CUDA paths, checked on the CPU with stand-ins for CUDA streams and devices (and, where a CUDA device
exists, the host-sync check of the SVD operators): engine streams are never stream 0 and are ordered
with events, ORT's CUDA-graph capture holds the capture lock, one bench run exports once per (prior, precision,
batch profile), SVD operators gather with cached index tensors, the per-mode layout and GroupNorm/attention
paths, the fp16-stored face64 weights, export --opt-batch and the export-device reference."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import lock_free_elsewhere
from ddpg.engine_metadata import BatchProfile, EngineError
from ddpg.engine_sidecar import ShapeProfile
from ddpg.errors import CheckpointError, ConfigError
from fake_cuda import fake_cuda

# --- TensorRT runs on a stream of its own, on its device ---------------------------------------------------------


def test_side_stream_is_never_stream_0_and_orders_with_events(monkeypatch):
    from ddpg.runtime.backends.cuda_stream import SideStream, check_stream_handle

    log: list = []
    fake_cuda(monkeypatch, log)
    side = SideStream(torch.device("cuda", 1))
    assert side.handle == 77
    with side.ordered() as handle:
        assert handle == 77 and torch.cuda.current_stream().cuda_stream == 77
    assert log == [("wait", 77, 0), ("device", "cuda:1"), ("stream", 77), ("device_exit", "cuda:1"), ("wait", 0, 77)]
    fake_cuda(monkeypatch, log, new_handle=0)
    with pytest.raises(EngineError, match="CUDA stream 0"):
        SideStream(torch.device("cuda", 0))
    with pytest.raises(EngineError, match="e.plan: refusing to launch on CUDA stream 0"):
        check_stream_handle(0, "e.plan")


def test_tensorrt_calls_run_on_their_own_stream_and_device_never_stream_0(monkeypatch):
    """A plain restore's current stream is the legacy default stream (0): every handle TensorRT gets (profile
    switch, enqueue) is the backend's own stream, the call is inside torch.cuda.device(engine device), and the
    caller's stream is ordered before and after with events."""
    from ddpg.runtime.backends.cuda_stream import SideStream
    from ddpg.runtime.backends.tensorrt import Bindings, EngineShapes, TensorRTDenoiser
    from fake_trt_engine import FakeEngine, fake_trt

    log: list = []
    fake_cuda(monkeypatch, log)
    trt = fake_trt()
    engine = FakeEngine(trt, profiles=1)
    profile = ShapeProfile.from_mapping({"x": ((1, 3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8)), "t": ((1,), (2,), (2,))})
    side = SideStream(torch.device("cpu"))
    bindings = Bindings(trt, engine, EngineShapes([profile], "e.plan"), side.device, lambda: side.handle,
                        side.synchronize)
    with pytest.raises(ConfigError, match="e.plan: CUDA-graph mode needs a fixed-shape engine"):
        TensorRTDenoiser.from_bindings(bindings, side, cuda_graph=True)  # this engine takes batches 1..2
    den = TensorRTDenoiser.from_bindings(bindings, side)
    engine.contexts[0].buffers = bindings.slots[0].buffers
    x = torch.randn(2, 3, 8, 8)
    log.clear()
    eps = den(x, torch.tensor([3.0, 5.0]))
    torch.testing.assert_close(eps, 0.5 * x + torch.tensor([3.0, 5.0])[:, None, None, None])
    handles = [e[-1] for e in engine.log if e[0] in ("profile", "execute")]
    assert handles and all(h == 77 for h in handles)
    assert log[0] == ("device", "cpu") and log[-1] == ("device_exit", "cpu")  # the whole call pinned
    inner = [e for e in log if e[0] in ("wait", "stream", "record")]
    assert inner == [("wait", 77, 0), ("stream", 77), ("wait", 0, 77), ("record", 0)]


def test_tensorrt_own_graph_is_captured_on_an_explicit_stream_under_the_capture_lock(monkeypatch):
    from ddpg.runtime.backends.cuda_stream import SideStream
    from ddpg.runtime.backends.tensorrt import Bindings, EngineShapes, TensorRTDenoiser
    from fake_trt_engine import FakeEngine, fake_trt

    log: list = []
    fake_cuda(monkeypatch, log)

    class Graph:
        def replay(self):
            log.append(("replay",))

    @contextlib.contextmanager
    def capture(graph, pool=None, stream=None, capture_error_mode="global"):
        log.append(("capture", stream.cuda_stream, capture_error_mode, not lock_free_elsewhere()))
        yield

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    trt = fake_trt()
    engine = FakeEngine(trt, profiles=1)
    fixed = ShapeProfile.from_mapping({"x": ((1, 3, 8, 8),) * 3, "t": ((1,),) * 3})
    side = SideStream(torch.device("cpu"))
    bindings = Bindings(trt, engine, EngineShapes([fixed], "e.plan"), side.device, lambda: side.handle,
                        side.synchronize)
    den = TensorRTDenoiser.from_bindings(bindings, side, cuda_graph=True)
    engine.contexts[0].buffers = bindings.slots[0].buffers
    x = torch.randn(1, 3, 8, 8)
    for _ in range(2):
        den(x, torch.tensor([1.0]))
    assert [e for e in log if e[0] in ("capture", "replay")] == [("capture", 77, "thread_local", True), ("replay",),
                                                                  ("replay",)]
    assert [e[-1] for e in engine.log if e[0] == "execute"] == [77, 77]  # the warm-up and the captured call
    assert lock_free_elsewhere()


def test_tensorrt_bindings_refuse_stream_0():
    from ddpg.runtime.backends.tensorrt import Bindings, EngineShapes
    from fake_trt_engine import FakeEngine, fake_trt

    trt = fake_trt()
    fixed = ShapeProfile.from_mapping({"x": ((1, 3, 8, 8),) * 3, "t": ((1,),) * 3})
    with pytest.raises(EngineError, match="refusing to launch on CUDA stream 0"):
        Bindings(trt, FakeEngine(trt, profiles=1), EngineShapes([fixed], "e.plan"), torch.device("cpu"),
                 stream=lambda: 0)


# --- ORT's CUDA-graph warm-up and capture hold the capture lock ---------------------------------------------------


def test_ort_cuda_graph_warm_up_and_capture_runs_hold_the_capture_lock(monkeypatch):
    from ddpg.runtime.backends import onnxruntime as backend
    from ddpg.runtime.backends.cuda_stream import SideStream

    log: list = []
    fake_cuda(monkeypatch, log)
    held = []

    class Session:
        def run_with_iobinding(self, binding, run_options):
            held.append(not lock_free_elsewhere())
            io.eps.copy_(io.x * 2)

    session, side = Session(), SideStream(torch.device("cuda", 0))
    io = backend.CudaIO(torch.zeros(1, 3, 4, 4), torch.zeros(1), None, torch.zeros(1, 3, 4, 4), "binding")
    x = torch.randn(1, 3, 4, 4)
    for graph_mode in (True, False):
        io.runs, held[:] = 0, []
        for _ in range(5):
            eps = backend.run_io_binding(session, io, side, "opts", x, torch.tensor([1.0]), cuda_graph=graph_mode)
            assert torch.equal(eps, 2 * x)
        capture = backend.GRAPH_CAPTURE_RUNS
        assert held == ([True] * capture + [False] * (5 - capture) if graph_mode else [False] * 5)
    assert lock_free_elsewhere()


# --- ORT's CUDA provider counts as usable only when a real session runs on it -----------------------------------


def test_ort_cuda_probe_needs_a_granted_cuda_session_and_matching_cuda_major(monkeypatch):
    from ddpg.runtime.backends.onnxruntime import probe_cuda

    class Session:
        def __init__(self, model, providers):
            self.granted = granted

        def get_providers(self):
            return self.granted

        def run(self, names, feeds):
            return [feeds["x"]]

    class Ort:  # hashable, as the onnxruntime module (preload_cuda_libraries is cached per module)
        __version__, cuda_version, InferenceSession = "1.31.1", "12.9", Session

        @staticmethod
        def get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    ort = Ort()
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    granted = ["CPUExecutionProvider"]  # listed, but its libraries did not load
    ok, why = probe_cuda(ort)
    assert not ok and "did not load" in why
    granted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert probe_cuda(ort)[0]
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    ok, why = probe_cuda(ort)
    assert not ok and "built for CUDA 12.9" in why and "CUDA 13" in why
    ok, why = probe_cuda()  # this machine's CPU-only onnxruntime
    assert not ok


# --- TensorRT profiles tuned for the deployed batch; one export per batch profile --------------------------------


def test_export_opt_batch_is_the_profiles_opt_and_is_validated():
    from ddpg.export.onnx_export import batch_profile

    assert batch_profile("1:1:8", 4) == BatchProfile(1, 4, 8)
    assert batch_profile("1:2:8") == BatchProfile(1, 2, 8) and batch_profile("8", 8) == BatchProfile(8, 8, 8)
    with pytest.raises(ConfigError, match=r"--opt-batch 16: must lie in the --batch range 1\.\.8"):
        batch_profile("1:1:8", 16)
    with pytest.raises(ConfigError, match="a fixed batch 4 takes only 4"):
        batch_profile("4", 2)


def test_export_command_refuses_an_opt_batch_outside_the_range(tmp_path):
    from typer.testing import CliRunner

    from ddpg.cli.main import app

    res = CliRunner().invoke(app, ["export", "--prior", "face64", "--random-weights", "--batch", "1:1:8",
                                   "--opt-batch", "16", "-o", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2 and "--opt-batch 16: must lie in the --batch range 1..8" in res.output
    assert not list(tmp_path.iterdir())


def test_one_bench_run_exports_once_per_prior_precision_and_batch_profile(tmp_path, monkeypatch):
    import ddpg.export
    from ddpg.bench.harness import BenchConfig, bench_export

    calls = []

    def fake_export(prior, *, out, batch, precision, **kw):
        calls.append((prior, precision, batch))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(f"{prior} {precision} {batch}".encode())
        from ddpg.export.onnx_export import sha256_of

        files = {"onnx": {"name": out.name, "sha256": sha256_of(out)}}
        out.with_name(out.name + ".json").write_text(json.dumps({"files": files}))

    monkeypatch.setattr(ddpg.export, "export_prior", fake_export)
    cfg = BenchConfig(prior="face64", backend="onnxruntime", precision="fp16", batches=[1, 8])
    first = [bench_export(cfg, b, cache_dir=tmp_path) for b in (1, 8)]
    again = [bench_export(cfg, b, cache_dir=tmp_path) for b in (1, 8)]  # a later (config, batch) run
    assert first == again and calls == [("face64", "fp16", "1"), ("face64", "fp16", "8")]
    bench_export(BenchConfig(prior="face64", backend="tensorrt", precision="fp16"), 8, cache_dir=tmp_path)
    assert len(calls) == 2  # the same export serves both engine backends
    bench_export(BenchConfig(prior="face64", backend="onnxruntime", precision="fp32"), 8, cache_dir=tmp_path)
    assert calls[-1] == ("face64", "fp32", "8")
    first[0].write_bytes(b"damaged")  # a file that no longer matches its sidecar is exported again
    bench_export(cfg, 1, cache_dir=tmp_path)
    assert len(calls) == 4


# --- the export's fp32 reference runs on the export's device -----------------------------------------------------


def test_validation_reference_runs_on_the_export_device_without_moving_the_module():
    from ddpg.export.validate import reference_on

    module = torch.nn.Conv2d(3, 3, 1)
    on_meta = reference_on(module, "meta")
    out = on_meta(torch.randn(1, 3, 4, 4, device="meta"))
    assert out.device.type == "meta" and module.weight.device.type == "cpu"
    assert reference_on(module, "cpu") is module


# --- SVD operators gather with cached index tensors and never synchronise the host -------------------------------


def _svd_operators():
    from ddpg.operators import make_operator
    from ddpg.operators.svd import Inpainting

    mask = torch.rand(16, 16, generator=torch.Generator().manual_seed(0)) > 0.4
    return [make_operator("sr4", 16, impl="svd"), make_operator("deblur_gauss", 16, impl="svd"), Inpainting(mask, 16)]


def _mask_reference_vt(op, x):
    """The boolean-mask formulation the operators used before (channel-major head, then the rest)."""
    from ddpg.operators.svd import Inpainting

    if isinstance(op, Inpainting):
        m = op.mask
        return torch.cat([x[..., m].reshape(x.shape[0], -1), x[..., ~m].reshape(x.shape[0], -1)], dim=1)
    M = op.matrices(x)
    c = M["Vh"].T @ x @ M["Vw"]
    mh, mw = op.m
    mask = torch.ones(c.shape[-2:], dtype=torch.bool)
    mask[:mh, :mw] = False
    return torch.cat([c[..., :mh, :mw].reshape(x.shape[0], -1), c[..., mask].reshape(x.shape[0], -1)], dim=1)


class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("index", range(3))
def test_svd_operators_gather_with_cached_indices_and_match_the_mask_layout(index):
    op = _svd_operators()[index]
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = op.A(x)
    torch.testing.assert_close(op.Vt(x), _mask_reference_vt(op, x), rtol=0, atol=0)
    torch.testing.assert_close(op.V(op.Vt(x)), x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(op.U(op.Ut(y)), y, rtol=1e-5, atol=1e-5)
    order = op.order
    perm = order.permutation(x.device)
    with _OpLog() as seen:  # steps after the first: no new index tensors, no mask indexing, no host reads
        for _ in range(2):
            op.V(op.Vt(x))
            op.U(op.Ut(y))
    assert order.permutation(x.device) is perm  # the one gather permutation, built once
    forbidden = {"nonzero", "masked_select", "_local_scalar_dense", "item", "_to_copy", "index", "index_put_",
                 "index_put", "sum"}
    assert not forbidden & set(seen.ops), sorted(forbidden & set(seen.ops))
    assert "index_select" in seen.ops


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.set_sync_debug_mode)")
def test_svd_operator_steps_do_not_synchronize_the_host_on_cuda():
    for op in _svd_operators():
        op.to("cuda")
        x = torch.randn(2, 3, 16, 16, device="cuda")
        view = op.spectral(x.device, "test")
        y = op.A(x)
        for checked in (False, True):  # the first pass builds the per-device caches (host-to-device copies)
            torch.cuda.set_sync_debug_mode("error" if checked else 0)
            try:
                view.image(view.coef(x) * view.s)
                view.meas_coef(y)
                op.pinv_eta(y - op.A(x), 0.1) + op.At(y)
                op.U(op.Ut(y))
            finally:
                torch.cuda.set_sync_debug_mode(0)


# --- seeded noise: one tensor, each image drawn from its own stream -----------------------------------------------


def test_seeded_noise_is_one_tensor_with_each_images_own_stream():
    from ddpg.runtime.restorer import SAMPLING_STREAM, seeded_start, stream_generator

    seeds = [4, 9, 2]
    x_T, noise = seeded_start(seeds, (8, 8), "cpu")
    gens = [stream_generator(s, SAMPLING_STREAM) for s in seeds]
    for draw in (lambda: x_T, lambda: noise(x_T)):  # x_T, then one step's noise: what B randn calls and a cat gave
        want = torch.cat([torch.randn((1, 3, 8, 8), generator=g) for g in gens])
        assert torch.equal(draw(), want)
    single_x, single_noise = seeded_start(seeds[1:2], (8, 8), "cpu")
    assert torch.equal(single_x[0], x_T[1])


def test_tensorrt_wheel_follows_torchs_cuda_major():
    from ddpg.runtime.backends.tensorrt_env import tensorrt_wheel

    assert tensorrt_wheel("13.0") == "tensorrt-cu13" and tensorrt_wheel("12.8") == "tensorrt-cu12"
    assert "tensorrt-cu13 or tensorrt-cu12" in tensorrt_wheel(None)


# --- memory layout per mode, GroupNorm without an fp32 copy, fused attention under compile ------------------------


def _tiny_prior():
    from ddpg.models import create_prior

    torch.manual_seed(0)
    return create_prior({"kind": "ddpm", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
                         "image_size": 16}).eval()


def test_layout_default_is_nchw_eager_and_channels_last_under_compile():
    from ddpg.bench.harness import BenchConfig
    from ddpg.runtime.fast_denoiser import FastDenoiser

    prior = _tiny_prior()
    assert not FastDenoiser(prior, precision="fp16").channels_last
    assert FastDenoiser(prior, precision="fp16", compile=True).channels_last  # compiles lazily, on a first call
    assert FastDenoiser(prior, precision="fp16", channels_last=True).channels_last
    assert BenchConfig(precision="fp16", cuda_graph=True).label == "torch fp16 +graph"
    assert BenchConfig(precision="fp16", cuda_graph=True, channels_last=True).label == \
        "torch fp16 channels-last +graph"
    assert "channels-last" in BenchConfig(precision="fp16", compile=True).label


def test_eager_low_precision_groupnorm_makes_no_fp32_copy_and_matches_the_fp32_norm():
    from ddpg.models.nn import GroupNorm32

    norm = GroupNorm32(4, 8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 8, 6, 6).half()
    with _OpLog() as seen:
        out = norm(x)
    assert out.dtype == torch.float16 and "_to_copy" not in seen.ops
    want = torch.nn.functional.group_norm(x.float(), 4, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(out.float(), want, rtol=2e-3, atol=2e-3)
    compiled = torch.compile(norm, backend="eager")(x)  # traced: the explicit float32 path, same numbers
    torch.testing.assert_close(compiled.float(), want, rtol=2e-3, atol=2e-3)


def test_fused_attention_fallback_is_for_onnx_export_only():
    from ddpg.models.nn import exporting

    class Probe(torch.nn.Module):
        def forward(self, x):
            return x + float(exporting())

    x = torch.zeros(1)
    assert Probe()(x).item() == 0
    assert torch.compile(Probe(), backend="eager")(x).item() == 0  # torch.compile keeps the fused kernels
    assert torch.export.export(Probe(), (x,)).module()(x).item() == 1


# --- the bundled face64 weights: fp16 safetensors, checked and upcast -----------------------------------------


def test_face64_loads_from_fp16_safetensors_upcast_and_checked(tmp_path):
    from safetensors.torch import load_file

    from ddpg.models import load_prior
    from ddpg.models.checkpoints import REGISTRY, local_path, read_state_dict, verify_file

    entry = REGISTRY["face64"]
    path = local_path(entry)
    assert path.suffix == ".safetensors" and path.is_file()
    verify_file(path, entry)
    stored = load_file(path)
    assert {v.dtype for v in stored.values()} == {torch.float16}
    model = load_prior("face64")
    state = model.state_dict()
    assert {v.dtype for v in state.values()} == {torch.float32}
    assert all(torch.equal(state[k], v.float()) for k, v in stored.items())
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="bad.safetensors: cannot read safetensors file"):
        read_state_dict(bad)
    changed = tmp_path / "face64.safetensors"
    changed.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))
    with pytest.raises(CheckpointError, match="sha256"):
        verify_file(changed, entry)
    assert np.isclose(sum(v.numel() for v in stored.values()), 8_952_067)
