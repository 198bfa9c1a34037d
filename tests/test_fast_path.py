"""The fast path computes the same function as the plain sampler: FastDenoiser (precision, channels-last),
GraphRunner (the method's own step with device scalars; CUDA graph on GPU), and the overlapped-I/O helpers.

On the CPU the runner's eager path equals the plain loop bit for bit for DDPG/IDPG (same x_T and noise; every
forward-only method: test_method_contract.py); through a FastDenoiser, relative L2 < 1e-5."""

import threading
import time
from contextlib import contextmanager

import pytest
import torch

from conftest import lock_free_elsewhere, rel_err
from ddpg.errors import ConfigError
from ddpg.models import GaussianPrior, as_denoiser, create_prior, prior_config
from ddpg.operators import make_operator
from ddpg.runtime import Restorer, ddpg_sample
from ddpg.runtime.background_io import BackgroundWriter, Prefetcher
from ddpg.runtime.cuda_graph import CAPTURE_LOCK, capture_graph
from ddpg.runtime.fast_denoiser import FastDenoiser
from ddpg.runtime.graph_runner import GraphRunner
from ddpg.runtime.samplers import SAMPLERS
from ddpg.runtime.samplers.method import MethodCapabilities
from fake_denoiser import FakeDenoiser
from reference_runs import RUN_PARAMS, load_run, run_hyper

TINY_DDPM = {"kind": "ddpm", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
             "image_size": 32}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA graphs, fp16 kernels)")


def gaussian_denoiser():
    return as_denoiser(GaussianPrior(prior_config("gaussian")))


def tiny_prior():
    torch.manual_seed(0)
    return create_prior(TINY_DDPM)


def replay_noise(seed: int):
    """A noise source and x_T that can be replayed: both runs draw from identically seeded generators."""
    g = torch.Generator().manual_seed(seed)
    return lambda like: torch.randn(like.shape, generator=g)


CASES = [  # (task, operator params, method, sigma_y, hyper) — σ = 0 (output x̃), modes 0/1/2, IDPG, SVD and FFT
    ("sr4", {"impl": "fft"}, "ddpg", 0.05, {"gamma": 8, "eta_tilde": 0.7, "step_size_mode": 1}),
    ("sr4", {"impl": "svd"}, "ddpg", 0.0, {}),
    ("deblur_gauss", {}, "ddpg", 0.1, {"step_size_mode": 2, "gamma": 3, "scale_ls": 0.5}),
    ("colorize", {}, "idpg", 0.05, {"step_size_mode": 0}),
]


@pytest.mark.parametrize("task,params,method,sigma_y,hyper", CASES)
def test_runner_equals_ddpg_sample(task, params, method, sigma_y, hyper):
    den = gaussian_denoiser()
    op = make_operator(task, 32, **params)
    y = op.A(torch.rand(2, 3, 32, 32) * 2 - 1) + 2 * sigma_y * torch.randn(op.meas_shape(2))
    x_T = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = ddpg_sample(den, op, y, sigma_y, steps=12, x_T=x_T, noise=replay_noise(7),
                          inject_noise=method == "ddpg", **hyper)
        runner = GraphRunner(den, op, method, sigma_y, steps=12, hyper=hyper)
        fast = runner.sample(y, x_T=x_T, noise=replay_noise(7))
    assert torch.equal(fast, ref)


@pytest.mark.parametrize("run", RUN_PARAMS)
def test_runner_reproduces_the_reference_runs(run):
    """The fast runner against the reference's recorded runs (not only against the eager sampler, whose step
    scalars it shares): ``output`` within the fixture tolerance, 1e-4 relative L2."""
    fx, op, den, y = load_run(run)
    noise = iter(fx["noise"])
    hyper = run_hyper(fx)
    steps, method = hyper.pop("steps"), "ddpg" if hyper.pop("inject_noise") else "idpg"
    with torch.no_grad():
        out = GraphRunner(den, op, method, fx["sigma_y_01"], steps=steps, hyper=hyper).sample(
            y, x_T=fx["x_T"], noise=lambda like: next(noise))
    assert next(noise, None) is None
    assert rel_err(out, fx["output"]) < 1e-4


def test_fast_denoiser_runner_equals_restorer_and_batch_equals_singles():
    prior = tiny_prior()
    op = make_operator("deblur_gauss", 16)  # the UNet runs at any multiple of its downsampling factor
    plain = Restorer(as_denoiser(prior), op, sigma_y=0.05, steps=3)
    runner = GraphRunner.from_restorer(Restorer(FastDenoiser(prior, channels_last=True), op, sigma_y=0.05,
                                                steps=3))
    assert not runner.cuda_graph  # CPU: eager fallback
    seeds = [11, 12]
    with torch.no_grad():
        y = plain.degrade(torch.rand(2, 3, 16, 16) * 2 - 1, seeds)
        ref = plain.restore(y, seeds)
        fast = runner.restore(y, seeds)
        single = runner.restore(y[1:], seeds[1:])
    assert rel_err(fast, ref) < 1e-5
    assert rel_err(single, ref[1:]) < 1e-5
    assert runner.settings()["fast"]["precision"] == "fp32"


def test_generator_path_matches_ddpg_sample_and_seeded_runs_replay():
    den = gaussian_denoiser()
    op = make_operator("deblur_gauss", 32)
    y = op.A(torch.rand(1, 3, 32, 32) * 2 - 1)
    with torch.no_grad():
        ref = ddpg_sample(den, op, y, 0.05, steps=6, generator=torch.Generator().manual_seed(3))
        runner = GraphRunner(den, op, "ddpg", 0.05, steps=6)
        fast = runner.sample(y, generator=torch.Generator().manual_seed(3))
        a, b, c = runner.sample(y, seed=1), runner.sample(y, seed=1), runner.sample(y, seed=2)
    assert torch.equal(fast, ref)
    assert torch.equal(a, b)
    assert rel_err(a, c) > 1e-3  # a different seed changes x_T and every z
    with torch.no_grad():  # the runner's own stream (z drawn inside the step) is ddpg_sample's for that seed
        seeded = ddpg_sample(den, op, y, 0.05, steps=6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, seeded)


def test_fast_denoiser_precisions_and_the_callers_module_is_untouched():
    prior = tiny_prior()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([990.0, 10.0])
    with torch.no_grad():
        ref = as_denoiser(prior)(x, t)
        same = FastDenoiser(prior, precision="fp32", channels_last=True)(x, t)
        low = FastDenoiser(prior, precision="bf16")(x, t)
    assert same.dtype == low.dtype == torch.float32 and same.is_contiguous()
    assert rel_err(same, ref) < 1e-5
    assert 0 < rel_err(low, ref) < 5e-2  # bf16 torso: 8-bit mantissa
    assert all(p.dtype == torch.float32 for p in prior.parameters())
    assert prior.conv_in.weight.is_contiguous()  # not converted to channels-last in place
    with pytest.raises(ConfigError, match="precision"):
        FastDenoiser(prior, precision="fp8")
    with pytest.raises(ConfigError, match="to_dtype"):
        FastDenoiser(GaussianPrior(prior_config("gaussian")), precision="fp16")


def test_runner_rejects_bad_requests(monkeypatch):
    den = gaussian_denoiser()
    op = make_operator("deblur_gauss", 32)
    with pytest.raises(ConfigError, match="CUDA device"):
        GraphRunner(den, op, "ddpg", 0.05, steps=4, cuda_graph=True)
    runner = GraphRunner(den, op, "ddpg", 0.05, steps=4)
    with pytest.raises(ConfigError, match="x_T"):
        runner.sample(torch.zeros(1, 3, 32, 32), x_T=torch.zeros(1, 3, 16, 16))
    with pytest.raises(ConfigError, match="seeds"):
        runner.restore(torch.zeros(2, 3, 32, 32), [1])
    with pytest.raises(ConfigError, match="zeta"):
        GraphRunner(den, op, "ddpg", 0.05, hyper={"zeta": 2.0})
    with pytest.raises(ConfigError, match="select_candidates"):
        GraphRunner.from_restorer(Restorer(den, op, sigma_y=0.05, hyper={"select_candidates": True}))
    with pytest.raises(ConfigError, match="forward-only"):
        GraphRunner(den, op, "dps", 0.05)
    monkeypatch.setattr(SAMPLERS["diffpir"].method, "capabilities", lambda p: MethodCapabilities(host_reads=True))
    with pytest.raises(ConfigError, match="cannot be captured"):
        GraphRunner(den, op, "diffpir", 0.05, cuda_graph=True)


def test_prefetcher_keeps_order_overlaps_and_reports_failures():
    loaded_by = set()

    def load(i):
        loaded_by.add(threading.current_thread().name)
        if i == 2:
            raise OSError("unreadable")
        time.sleep(0.01)
        return i * i

    with Prefetcher(range(5), load, depth=2) as pf:
        entries = list(pf)
    assert [e[0] for e in entries] == [0, 1, 2, 3, 4]
    assert [e[1] for e in entries] == [0, 1, None, 9, 16]
    assert isinstance(entries[2][2], OSError) and entries[0][2] is None
    assert threading.current_thread().name not in loaded_by
    with pytest.raises(ConfigError):
        Prefetcher([], load, depth=0)


def test_background_writer_runs_jobs_in_order_and_collects_errors():
    done = []

    def job(i):
        if i == 1:
            raise OSError("disk full")
        done.append(i)

    writer = BackgroundWriter(depth=2)
    for i in range(4):
        writer.submit(job, i)
    errors = writer.close()
    assert done == [0, 2, 3]
    assert len(errors) == 1 and errors[0][0] == (1,) and isinstance(errors[0][1], OSError)
    with pytest.raises(RuntimeError):
        writer.submit(job, 5)



class FakeStream:
    def __init__(self, device=None):
        self.device = device

    def wait_stream(self, other) -> None:
        pass


class FakeGraph:
    def __init__(self, log: list):
        self.log = log

    def register_generator_state(self, generator) -> None:
        self.log.append(("register", generator))


def fake_cuda_graph_api(monkeypatch) -> list:
    """Replace the torch.cuda calls of ``capture_graph`` with recorders (CPU tests); returns the log."""
    log: list = []

    @contextmanager
    def device(dev):
        log.append(("device", torch.device(dev)))
        yield
        log.append(("device_exit",))

    @contextmanager
    def stream(s):
        log.append(("stream", s, lock_free_elsewhere()))
        yield

    @contextmanager
    def graph(cuda_graph, pool=None, stream=None, capture_error_mode="global"):
        log.append(("capture", stream, capture_error_mode, lock_free_elsewhere()))
        yield

    def new_stream(dev=None):
        s = FakeStream(dev)
        log.append(("new_stream", s))
        return s

    for name, fake in {"device": device, "stream": stream, "graph": graph, "Stream": new_stream,
                       "current_stream": FakeStream, "CUDAGraph": lambda: FakeGraph(log)}.items():
        monkeypatch.setattr(torch.cuda, name, fake)
    return log


def test_capture_runs_on_its_device_and_side_stream_under_the_capture_lock(monkeypatch):
    device, generator, calls = torch.device("cpu"), torch.Generator(), []
    log = fake_cuda_graph_api(monkeypatch)
    graph = capture_graph(lambda: calls.append(lock_free_elsewhere()), device, warmup=2, generator=generator)
    kinds = [e[0] for e in log]
    assert calls == [False] * 3  # two warm-up calls and the captured one, each with the lock held
    assert log[0] == ("device", device) and kinds[-1] == "device_exit"
    side = next(e[1] for e in log if e[0] == "new_stream")
    warmup = next(e for e in log if e[0] == "stream")
    capture = next(e for e in log if e[0] == "capture")
    assert warmup[1] is side and not warmup[2]  # warm-up on the side stream, other threads locked out
    assert capture[1:] == (side, "thread_local", False)  # explicit stream, lock held during capture
    assert kinds.index("register") < kinds.index("capture") and log[kinds.index("register")][1] is generator
    assert isinstance(graph, FakeGraph)
    assert lock_free_elsewhere()


class SignallingLock:
    """An RLock (``inner``) that sets ``waiting`` whenever another thread than its creator is about to acquire it."""

    def __init__(self):
        self.inner, self._owner, self.waiting = threading.RLock(), threading.get_ident(), threading.Event()

    def acquire(self, blocking=True, timeout=-1):
        if threading.get_ident() != self._owner:
            self.waiting.set()
        return self.inner.acquire(blocking, timeout)

    def release(self):
        self.inner.release()

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()


def test_prefetcher_loads_hold_the_capture_lock_and_wait_for_a_capture(monkeypatch):
    """While the capture lock is held no load starts: the loader thread is seen reaching the lock (an explicit
    signal, not a sleep), and the load has not run while the lock is held."""
    import ddpg.runtime.background_io as background_io

    assert CAPTURE_LOCK is background_io.CAPTURE_LOCK  # capture_graph takes the same lock
    lock = SignallingLock()
    monkeypatch.setattr(background_io, "CAPTURE_LOCK", lock)
    started, held = threading.Event(), []

    def load(i):
        started.set()
        held.append(not lock_free_elsewhere(lock.inner))
        return i

    with lock:  # as capture_graph: no load may start meanwhile
        pf = Prefetcher(range(2), load, depth=1)
        assert lock.waiting.wait(timeout=60)  # the loader is at the lock (fails only if it never takes it)
        assert not started.is_set()  # ... and blocked there: the lock is held by this thread
    with pf:
        assert [e[1] for e in pf] == [0, 1]
    assert held == [True, True]  # each load ran holding the lock


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_runner_refuses_compile_modes_that_make_their_own_cuda_graphs(mode):
    class CompiledUNet(FakeDenoiser):  # a FastDenoiser's speed attributes, without building one on a GPU
        graph_safe, compile_mode = True, mode

    op = make_operator("deblur_gauss", 32)
    with pytest.raises(ConfigError, match=mode):
        GraphRunner(CompiledUNet(), op, "ddpg", 0.05, steps=4, cuda_graph=True, device="cuda:0")


def test_release_waits_for_the_device_only_when_graphs_exist(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", synced.append)
    op = make_operator("deblur_gauss", 32)
    runner = GraphRunner(gaussian_denoiser(), op, "ddpg", 0.05, steps=4)
    y = op.A(torch.zeros(1, 3, 32, 32))
    runner.sample(y)
    assert list(runner.buffers) == [tuple(y.shape)]
    runner.release()
    assert synced == [] and runner.buffers == {}
    runner.sample(y)
    runner.buffers[tuple(y.shape)].graph = object()  # as after a capture (a CPU runner captures none)
    runner.release()
    assert synced == [runner.device] and runner.buffers == {}


def test_low_precision_keeps_norms_embeddings_and_head_in_float32():
    fast = FastDenoiser(tiny_prior(), precision="bf16", channels_last=True).prior
    assert fast.conv_in.weight.dtype == fast.down[0].block[0].conv1.weight.dtype == torch.bfloat16
    assert fast.mid.attn_1.q.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for m in fast.modules() if isinstance(m, torch.nn.GroupNorm)
               for p in m.parameters())
    assert all(p.dtype == torch.float32 for p in [*fast.temb.parameters(), *fast.conv_out.parameters()])
    assert fast.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


# --- CUDA only ----------------------------------------------------------------------------------------------

@needs_cuda
def test_cuda_graph_runner_equals_eager_runner(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    prior = tiny_prior().cuda()
    den = FastDenoiser(prior, precision="fp32", channels_last=True)
    op = make_operator("sr4", 32, impl="fft").to("cuda")
    y = op.A(torch.rand(2, 3, 32, 32, device="cuda") * 2 - 1)
    graph = GraphRunner(den, op, "ddpg", 0.05, steps=8, cuda_graph=True)
    eager = GraphRunner(den, op, "ddpg", 0.05, steps=8, cuda_graph=False)
    seeds = [1, 2]
    out_graph, out_eager = graph.restore(y, seeds), eager.restore(y, seeds)
    assert graph.buffers[tuple(y.shape)].graph is not None
    assert rel_err(out_graph, out_eager) < 1e-4  # cuDNN may pick other kernels inside the graph
    again = graph.restore(y, seeds)  # the same graph replays with new inputs
    assert torch.equal(again, out_graph)


@needs_cuda
def test_cuda_graph_in_graph_noise_is_seeded():
    prior = tiny_prior().cuda()
    den = FastDenoiser(prior, precision="fp16")
    op = make_operator("sr4", 32, impl="fft").to("cuda")
    y = op.A(torch.rand(1, 3, 32, 32, device="cuda") * 2 - 1)
    runner = GraphRunner(den, op, "ddpg", 0.05, steps=6, cuda_graph=True)
    a, b, c = runner.sample(y, seed=5), runner.sample(y, seed=5), runner.sample(y, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all()


@needs_cuda
def test_cuda_graph_in_graph_noise_follows_the_eager_generator_stream(monkeypatch):
    """manual_seed after capture is honoured and each replay advances the Philox offset as the eager draw does."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    den = FastDenoiser(tiny_prior().cuda(), precision="fp32")
    op = make_operator("deblur_gauss", 32).to("cuda")
    y = op.A(torch.rand(2, 3, 32, 32, device="cuda") * 2 - 1)
    graph = GraphRunner(den, op, "ddpg", 0.05, steps=6, cuda_graph=True)
    eager = GraphRunner(den, op, "ddpg", 0.05, steps=6, cuda_graph=False)
    out_graph, out_eager = graph.sample(y, seed=3), eager.sample(y, seed=3)
    assert rel_err(out_graph, out_eager) < 1e-4
