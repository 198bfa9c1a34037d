"""ONNX Runtime denoiser: an exported prior (``ddpg export``) behind the torch denoiser interface.

``OrtDenoiser(path, device=...)(x_t (B,3,H,W) float32, t (B,) float32) -> eps (B,3,H,W) float32`` on the device
of x_t. CPU: the CPU execution provider with numpy inputs (``sess.run``). CUDA: the CUDA execution provider with
IO binding on torch CUDA buffers (allocated once per input shape; inputs copied in on the device, never through
the host), ORT running on a torch stream of its own that is ordered against the caller's stream with events (no
host synchronization), and an optional CUDA-graph mode for fixed-batch exports. The guidance maths stays in
torch; the schedule and config come from the metadata.

No host synchronization: the run option ``disable_synchronize_execution_providers=1`` skips the CUDA provider's
cudaStreamSynchronize at the end of a run (onnxruntime_run_options_config_keys.h), and ORT flushes (synchronizes)
only streams it owns, never a user compute stream (CudaStream::Flush). ORT does not synchronize bound inputs or
outputs itself (IOBinding.synchronize_inputs/outputs are explicit calls): the stream ordering below does it.
CUDA-graph mode: the first call runs the model twice, then captures and replays it on the user stream (the CUDA
provider's min_num_runs_before_cuda_graph_capture_ = 2; InferenceSession::Run repeats itself until captured);
replays reuse the bound buffers' addresses, hence one input shape only. ORT captures with
``cudaStreamCaptureModeGlobal`` ("cuda graph can only work with a single thread", CUDAGraphManager::CaptureBegin
in onnxruntime/core/providers/cuda/cuda_graph.cc), so CUDA work from any other thread during the capture (the
restore command's prefetcher copies inputs to the GPU) would invalidate it: the first ``GRAPH_CAPTURE_RUNS``
runs of a shape hold ``CAPTURE_LOCK``, which the prefetcher takes around each load (:func:`run_bound`).

Why a stream of its own (``cuda_stream.SideStream``): the CUDA provider treats a ``user_compute_stream`` of 0,
which is what torch's default stream reports, as no stream at all and would run on a stream torch knows nothing of.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ddpg.engine_metadata import EngineError, EngineInfo, read_metadata
from ddpg.errors import ConfigError
from ddpg.models.denoiser import prediction_type
from ddpg.runtime.cuda_graph import CAPTURE_LOCK
from ddpg.threads import applied_threads
from ddpg.versions import install_hint

from .capabilities import ONNXRUNTIME_CAPABILITIES
from .cuda_stream import SideStream
from .engine_inputs import engine_class_labels, labels_for_batch, timesteps_for_batch

CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"
# runs of one input shape that may warm up or capture ORT's CUDA graph: the provider's two regular runs, then the
# capturing one (a margin should InferenceSession::Run not repeat itself until captured)
GRAPH_CAPTURE_RUNS = 3
log = logging.getLogger("ddpg")


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError("backend 'onnxruntime' not available: the onnxruntime package is not installed "
                          f"({install_hint('onnx')}; for CUDA, onnxruntime-gpu in its place)") from exc
    return onnxruntime


@functools.cache
def preload_cuda_libraries(ort) -> None:
    """Load the CUDA and cuDNN libraries the CUDA provider links against, once per process, from the copies torch
    (or the nvidia-* wheels) installed: onnxruntime-gpu ships none (``onnxruntime.preload_dlls``, ORT >= 1.21;
    https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider). Without it the session may fall back to
    the CPU, which :func:`make_session` then refuses."""
    if not hasattr(ort, "preload_dlls"):
        return
    try:
        ort.preload_dlls()
    except Exception as exc:  # best effort: make_session's provider check reports what is missing
        log.warning("onnxruntime.preload_dlls() failed (%s); relying on the system's CUDA/cuDNN libraries", exc)


def probe_cuda(ort=None) -> tuple[bool, str]:
    """(whether ONNX Runtime really runs on CUDA here, why). ``get_available_providers()`` lists the CUDA provider
    whenever the wheel has it, even when its CUDA/cuDNN libraries cannot load; this creates a session on a
    one-node model with the CUDA provider only, checks that the session was granted it and runs it, and compares
    the wheel's CUDA major (``onnxruntime.cuda_version``) with torch's. ``ort``: the module (tests)."""
    ort = _ort() if ort is None else ort
    if CUDA_EP not in ort.get_available_providers():
        return False, f"onnxruntime {ort.__version__} has no CUDA provider (install onnxruntime-gpu)"
    wheel_cuda, torch_cuda = str(getattr(ort, "cuda_version", "") or ""), torch.version.cuda
    if wheel_cuda and torch_cuda and wheel_cuda.split(".")[0] != torch_cuda.split(".")[0]:
        return False, (f"onnxruntime {ort.__version__} is built for CUDA {wheel_cuda}, torch {torch.__version__} for "
                       f"CUDA {torch_cuda}: install the onnxruntime-gpu build for CUDA {torch_cuda.split('.')[0]}")
    preload_cuda_libraries(ort)
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=[CUDA_EP])
        granted = session.get_providers()
        session.run(None, {"x": np.zeros(1, np.float32)})
    except Exception as exc:  # ORT raises its own types when the provider's libraries cannot load
        return False, f"onnxruntime {ort.__version__}: a CUDA session failed ({type(exc).__name__}: {exc})"
    if not granted or granted[0] != CUDA_EP:
        return False, (f"onnxruntime {ort.__version__}: the CUDA provider did not load (granted {granted}; CUDA or "
                       "cuDNN libraries missing or mismatched)")
    return True, f"onnxruntime {ort.__version__} runs on CUDA {wheel_cuda or '?'} (torch CUDA {torch_cuda})"


def make_session(path: str | Path, device: str | torch.device = "cpu", *, cuda_graph: bool = False,
                 tf32: bool = False, stream: int | None = None, provider_options: dict | None = None,
                 sess_options=None, threads: int | None = None):
    """An InferenceSession on the CPU or CUDA execution provider, refusing to fall back silently.

    CPU: ORT's idle threads do not spin and it runs on ``threads`` threads (default: the ``--threads`` count,
    :func:`~ddpg.threads.applied_threads`; unless ``sess_options`` says otherwise). CUDA: ``stream`` (a
    cudaStream_t as int; not 0, which ORT would ignore) becomes ORT's user compute stream, and the session must
    confirm it; ``cuda_graph`` sets ``enable_cuda_graph``; ``tf32=False`` keeps fp32 convolutions and matmuls
    exact (``use_tf32=0``); ``provider_options`` are added to (and override) these.
    """
    ort = _ort()
    device = torch.device(device)
    path = Path(path)
    if device.type == "cpu":
        if cuda_graph:
            raise ConfigError("cuda_graph needs device cuda (the CPU provider has no CUDA graphs)")
        providers: list = [CPU_EP]
        if sess_options is None:  # torch computes the guidance between calls: idle ORT threads must not spin
            sess_options = ort.SessionOptions()
            sess_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if threads is not None and int(threads) < 1:
                raise ConfigError(f"threads {threads}: must be >= 1")
            # threads, else --threads; 0: ORT's default (the cores)
            sess_options.intra_op_num_threads = int(threads or applied_threads() or 0)
    elif device.type == "cuda":
        preload_cuda_libraries(ort)
        available = ort.get_available_providers()
        if CUDA_EP not in available:
            raise ConfigError(f"device {device} requested but ONNX Runtime {ort.__version__} offers only "
                              f"{', '.join(available)}; install onnxruntime-gpu matching your CUDA and cuDNN")
        options = {"device_id": str(device.index or 0), "use_tf32": "1" if tf32 else "0",
                   "enable_cuda_graph": "1" if cuda_graph else "0"}
        if stream is not None:
            if not stream:
                raise ConfigError("user compute stream 0 (the legacy default stream) is ignored by ONNX Runtime's "
                                  "CUDA provider; pass a torch.cuda.Stream's handle")
            options.update(has_user_compute_stream="1", user_compute_stream=str(stream))
        options.update({k: str(v) for k, v in (provider_options or {}).items()})
        providers = [(CUDA_EP, options)]
    else:
        raise ConfigError(f"device {device}: the onnxruntime backend runs on cpu or cuda")
    try:
        session = ort.InferenceSession(str(path), sess_options=sess_options, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        raise EngineError(f"{path}: ONNX Runtime cannot load this model on {device}: {exc}") from exc
    granted = session.get_providers()
    if device.type == "cuda":
        if granted[0] != CUDA_EP:
            raise EngineError(f"{path}: CUDA requested but ONNX Runtime granted {granted} (CUDA/cuDNN libraries "
                              "missing or mismatched?); refusing to run on the CPU")
        granted_opts = session.get_provider_options().get(CUDA_EP, {})
        if cuda_graph and granted_opts.get("enable_cuda_graph") != "1":
            raise EngineError(f"{path}: CUDA graph requested but the CUDA provider did not enable it")
        if stream is not None and granted_opts.get("has_user_compute_stream") != "1":
            raise EngineError(f"{path}: the CUDA provider did not take the compute stream it was given")
    return session


def _check_device_of(x: torch.Tensor, device: torch.device, source: str) -> None:
    same = x.device.type == device.type and (device.type == "cpu" or x.device.index == device.index)
    if not same:
        raise EngineError(f"{source}: x_t is on {x.device} but this ONNX Runtime session runs on {device}")


@dataclass
class CudaIO:
    """Device buffers bound to one IO binding for one input shape."""

    x: torch.Tensor
    t: torch.Tensor
    y: torch.Tensor | None
    eps: torch.Tensor
    binding: object
    runs: int = 0  # runs made with this binding (CUDA-graph mode: the first ones warm up and capture)


class OrtDenoiser:
    """ε-prediction with an exported prior under ONNX Runtime (same interface as ``ddpg.models.Denoiser``,
    without gradients). ``class_labels``: an int or (B,) int tensor, required for class-conditional exports.
    ``cuda_graph``: ORT's own capture of the engine call; a sampler step around it is never captured in torch's
    (``graph_safe`` False)."""

    backend = "onnxruntime"
    capabilities = ONNXRUNTIME_CAPABILITIES
    graph_safe = False
    compile_mode = None
    prior = None

    def __init__(self, engine: str | Path, *, device: str | torch.device = "cpu",
                 class_labels: torch.Tensor | int | None = None, cuda_graph: bool = False, tf32: bool = False,
                 provider_options: dict | None = None, sess_options=None, threads: int | None = None):
        self.engine_path = Path(engine)
        self.info: EngineInfo = read_metadata(self.engine_path)
        self.config: dict = dict(self.info.config)
        self.name: str | None = self.info.prior
        self.schedule = self.info.schedule
        self.prediction = prediction_type(self)
        self.precision = self.info.precision
        if self.precision == "bf16":
            raise EngineError(f"{self.engine_path}: a bf16 export runs under TensorRT only (ONNX Runtime has no bf16 "
                              "convolutions at opset 18–20); export fp16 or fp32 for onnxruntime")
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"device {device} requested but this torch sees no CUDA GPU")
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
        self.class_labels = engine_class_labels(self.info, class_labels, self.device)
        if cuda_graph and not self.info.batch.fixed:
            raise ConfigError(f"{self.engine_path}: CUDA-graph mode needs a fixed-shape export (ddpg export "
                              f"--batch N); this one takes batch {self.info.batch}")
        self.cuda_graph = cuda_graph
        self._side = SideStream(self.device) if self.device.type == "cuda" else None  # never stream 0
        self.session = make_session(self.engine_path, self.device, cuda_graph=cuda_graph, tf32=tf32,
                                    stream=self._side.handle if self._side is not None else None,
                                    provider_options=provider_options, sess_options=sess_options,
                                    threads=threads)
        self._io: dict[tuple[int, ...], CudaIO] = {}
        self._run_options = None
        if self.device.type == "cuda":  # torch orders the work on the shared stream; no host sync per call
            self._run_options = _ort().RunOptions()
            self._run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps (B,3,H,W) float32 on x_t's device, for x_t (B,3,H,W) and timestep values t (B,) (or one value)."""
        self.info.check_input(tuple(x_t.shape))
        _check_device_of(x_t, self.device, str(self.engine_path))
        t = timesteps_for_batch(t, x_t.shape[0], x_t.device, str(self.engine_path))
        if self.device.type == "cpu":
            return self._run_cpu(x_t, t)
        return run_io_binding(self.session, self._buffers(tuple(x_t.shape)), self._side, self._run_options, x_t, t,
                              cuda_graph=self.cuda_graph)

    def _run_cpu(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        feeds = {"x": x_t.detach().float().contiguous().numpy(), "t": t.detach().contiguous().numpy()}
        labels = labels_for_batch(self.class_labels, x_t.shape[0], str(self.engine_path))
        if labels is not None:
            feeds["y"] = labels.numpy()
        (eps,) = self.session.run(["eps"], feeds)
        return torch.from_numpy(np.ascontiguousarray(eps, dtype=np.float32))

    def _buffers(self, shape: tuple[int, ...]) -> CudaIO:
        if shape in self._io:
            return self._io[shape]
        if self.cuda_graph and self._io:
            raise EngineError(f"{self.engine_path}: CUDA-graph mode captured shape {next(iter(self._io))}; "
                              f"got {shape}")
        dev = self.device
        x = torch.empty(shape, dtype=torch.float32, device=dev)
        t = torch.empty(shape[:1], dtype=torch.float32, device=dev)
        labels = labels_for_batch(self.class_labels, shape[0], str(self.engine_path))
        y = None if labels is None else labels.clone().contiguous()
        eps = torch.empty(shape, dtype=torch.float32, device=dev)
        binding = self.session.io_binding()
        for name, tensor, dtype in (("x", x, np.float32), ("t", t, np.float32), ("y", y, np.int64)):
            if tensor is not None:
                binding.bind_input(name, device_type="cuda", device_id=dev.index, element_type=dtype,
                                   shape=tuple(tensor.shape), buffer_ptr=tensor.data_ptr())
        binding.bind_output("eps", device_type="cuda", device_id=dev.index, element_type=np.float32,
                            shape=tuple(eps.shape), buffer_ptr=eps.data_ptr())
        self._io[shape] = CudaIO(x, t, y, eps, binding)
        return self._io[shape]

    def options(self) -> dict:
        return {}

    @property
    def stream_handle(self) -> int | None:
        """The cudaStream_t ORT runs on (its user compute stream; never 0), None on the CPU."""
        return self._side.handle if self._side is not None else None


def run_io_binding(session, io: CudaIO, side: SideStream, run_options, x_t: torch.Tensor, t: torch.Tensor, *,
                   cuda_graph: bool) -> torch.Tensor:
    """eps (B,3,H,W), a fresh tensor, from one run of ``session`` on ``io`` (buffers bound for x_t's shape).

    The input copies, ORT's kernels and the output copy, all on ``side`` (ORT's stream), in order: a call can never
    overwrite the bound buffers while an earlier call (issued from any caller stream) still uses them.
    ``cuda_graph``: the first ``GRAPH_CAPTURE_RUNS`` runs of ``io`` hold ``CAPTURE_LOCK``."""
    caller = torch.cuda.current_stream(side.device)
    with side.ordered():  # after the caller's writes of x_t and t; ORT's OnRunStart sets the device too
        io.x.copy_(x_t.detach())
        io.t.copy_(t.detach())
        run_bound(session, io.binding, run_options, capture=cuda_graph and io.runs < GRAPH_CAPTURE_RUNS)
        io.runs += 1
        eps = io.eps.clone()  # the bound buffer is overwritten by the next call
    eps.record_stream(caller)  # allocated on ORT's stream, used on the caller's
    return eps


def run_bound(session, binding, run_options, *, capture: bool) -> None:
    """``session.run_with_iobinding``, holding ``CAPTURE_LOCK`` when the run may warm up or capture ORT's CUDA
    graph (``capture``): no other thread launches CUDA work during ORT's global-mode stream capture."""
    if not capture:
        session.run_with_iobinding(binding, run_options)
        return
    with CAPTURE_LOCK:
        session.run_with_iobinding(binding, run_options)
