"""TensorRT denoiser: a ddpg engine (``ddpg export --format tensorrt``) behind the torch denoiser interface.

``TensorRTDenoiser(plan, device="cuda")(x_t (B,3,H,W) float32, t (B,) float32) -> eps (B,3,H,W) float32`` on
the GPU, with no host round trip (docs/deployment.md §9–10):

- the plan is deserialized once (``Runtime.deserialize_cuda_engine``) after its sidecar has vouched for it
  (plan sha256, TensorRT version, GPU name and compute capability; a stale or foreign engine is refused, never
  run); prior name, config and diffusion schedule come from the ONNX metadata stored in the sidecar;
- one execution context per optimization profile (``create_execution_context``,
  ``set_optimization_profile_async``, then one stream synchronization); its input/output buffers are torch CUDA
  tensors allocated once at the profile's largest shape and bound once with ``set_tensor_address`` (a batch-b view
  of a contiguous buffer keeps the same address), so a call is ``copy_`` in, ``set_input_shape`` when the batch
  changes, and ``execute_async_v3``;
- TensorRT runs on a CUDA stream of its own (``cuda_stream.SideStream``: never the legacy default stream 0, which
  a plain restore's current torch stream is and on which TensorRT adds device synchronizations), ordered against
  the caller's stream with events, and every call pins the engine's device (``torch.cuda.device``);
- shapes are checked against the profiles before any CUDA work: a fixed-size engine rejects other shapes
  with a message that says which shapes it takes;
- ``cuda_graph=True`` (fixed-shape engines) captures the engine call into a ``torch.cuda.CUDAGraph`` after
  one eager warm-up call (which flushes TensorRT's deferred shape setup) and replays it afterwards.

TensorRT Python API used here, checked against NVIDIA's documentation pages and, for exact signatures, return
values and errors, against the bindings (``python/src/infer/pyCore.cpp`` and ``python/docstrings/infer/pyCoreDoc.h``
of https://github.com/NVIDIA/TensorRT, branches ``release/10.16`` and ``release/11.0``) and the C++ header
``include/NvInferRuntime.h`` they wrap:

- ``Runtime(logger).deserialize_cuda_engine(serialized_engine)`` (None when it cannot):
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Runtime.html
- ICudaEngine ``num_io_tensors``, ``get_tensor_name(index)``, ``get_tensor_mode(name)`` (``TensorIOMode.INPUT``),
  ``get_tensor_dtype(name)`` (``DataType.FLOAT/HALF/BF16/INT32/INT64/...``), ``num_optimization_profiles``,
  ``create_execution_context()``:
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Engine.html ,
  https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Engine.html
- IExecutionContext ``set_optimization_profile_async(profile_index, stream_handle)`` (the binding raises
  RuntimeError "Error in set optimization profile async." instead of returning False; the profile stream must be
  synchronized with the enqueue stream, or the behaviour is undefined), ``set_input_shape(name, shape)``,
  ``set_tensor_address(name, memory)`` (an int device pointer), ``execute_async_v3(stream_handle)`` (an int
  ``cudaStream_t``; TensorRT warns that the legacy default stream costs extra device synchronizations):
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/ExecutionContext.html ,
  https://docs.nvidia.com/deeplearning/tensorrt/11.4.0/_static/python-api/infer/Core/ExecutionContext.html
- none of them is in the 10.x → 11.x removed-API table,
  https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html
- engines run only with the TensorRT version and GPU architecture they were built for (no version- or
  hardware-compatible builds here):
  https://docs.nvidia.com/deeplearning/tensorrt/11.1.0/inference-library/engine-compatibility.html
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ddpg.engine_metadata import EngineError, EngineInfo
from ddpg.engine_sidecar import ShapeProfile, check_engine_environment, read_sidecar, sidecar_key
from ddpg.errors import ConfigError, ParameterError
from ddpg.models.denoiser import prediction_type
from ddpg.runtime.cuda_graph import CAPTURE_LOCK
from ddpg.schedule import Schedule

from .capabilities import TENSORRT_CAPABILITIES
from .cuda_stream import SideStream, check_stream_handle
from .engine_inputs import engine_class_labels, labels_for_batch, timesteps_for_batch
from .tensorrt_env import deserialize_plan, gpu_info, require_tensorrt

_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
                 "INT64": torch.int64, "BOOL": torch.bool, "INT8": torch.int8, "UINT8": torch.uint8}


def torch_dtype(trt, dtype) -> torch.dtype:
    """The torch dtype of a ``tensorrt.DataType`` member."""
    for name, torch_type in _TORCH_DTYPES.items():
        if getattr(trt.DataType, name, None) == dtype:
            return torch_type
    raise EngineError(f"engine tensor type {dtype} has no torch equivalent")


def input_shape(name: str, batch: int, size: tuple[int, int]) -> tuple[int, ...]:
    """The shape of tensor ``name`` (images x and eps; per-sample t and y) for ``batch`` images of ``size``."""
    return (batch, 3, *size) if name in ("x", "eps") else (batch,)


class EngineShapes:
    """The optimization profiles of an engine (pure Python): picks the profile for an input shape, or refuses
    the shape with a message naming the accepted ones."""

    def __init__(self, profiles: list[ShapeProfile], source: str | Path):
        if not profiles:
            raise EngineError(f"{source}: the engine records no optimization profiles")
        self.profiles, self.source = list(profiles), str(source)
        lo = self.profiles[0].get("x")[0]
        self.size: tuple[int, int] = (lo[2], lo[3])
        self.names: tuple[str, ...] = self.profiles[0].names

    @property
    def fixed(self) -> bool:
        """One profile with one shape: the engine call can be captured in a CUDA graph."""
        return len(self.profiles) == 1 and self.profiles[0].fixed

    def select(self, x_shape: tuple[int, ...]) -> int:
        """The index of the first profile that accepts x of shape ``x_shape`` (B, 3, H, W)."""
        x_shape = tuple(int(d) for d in x_shape)
        if len(x_shape) != 4 or x_shape[1] != 3:
            raise EngineError(f"{self.source}: x must be (B, 3, H, W), got {x_shape}")
        shapes = {name: input_shape(name, x_shape[0], x_shape[2:]) for name in self.names}
        for index, profile in enumerate(self.profiles):
            if profile.accepts(shapes):
                return index
        if self.fixed:
            raise EngineError(f"{self.source}: this engine was built for the fixed shape "
                              f"{self.profiles[0].get('x')[0]} only, got x {x_shape}; rebuild it for other shapes "
                              "(ddpg export --format tensorrt --batch MIN:OPT:MAX --size H W)")
        accepted = "; ".join(p.describe() for p in self.profiles)
        raise EngineError(f"{self.source}: no optimization profile of this engine accepts x {x_shape} "
                          f"(it takes {accepted}); rebuild it with a --batch range covering {x_shape[0]}")


@dataclass
class _Slot:
    """One optimization profile's execution context and its I/O buffers (at the profile's largest batch)."""

    context: object
    buffers: dict[str, torch.Tensor]
    batch: int = 0  # the batch whose input shapes the context currently holds (0: none yet)


class Bindings:
    """Execution contexts (one per profile) with buffers allocated and bound once. ``stream`` returns the CUDA
    stream handle to launch on (the engine's own stream; 0, the legacy default stream, is refused);
    ``synchronize`` waits for the stream the profiles were selected on (TensorRT requires it before an enqueue
    on another stream); ``device`` is where the buffers live."""

    def __init__(self, trt, engine, shapes: EngineShapes, device: torch.device, stream: Callable[[], int],
                 synchronize: Callable[[], None] | None = None):
        self.trt, self.engine, self.shapes, self.device, self.stream = trt, engine, shapes, device, stream
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        if sorted(self.inputs) != sorted(shapes.names) or self.outputs != ["eps"]:
            raise EngineError(f"{shapes.source}: engine I/O {self.inputs} → {self.outputs} differs from the export's "
                              f"{list(shapes.names)} → ['eps']")
        if engine.num_optimization_profiles != len(shapes.profiles):
            raise EngineError(f"{shapes.source}: the engine has {engine.num_optimization_profiles} optimization "
                              f"profiles, its sidecar {len(shapes.profiles)}")
        self.dtypes = {n: torch_dtype(trt, engine.get_tensor_dtype(n)) for n in names}
        self.slots = [self._make_slot(index, profile) for index, profile in enumerate(shapes.profiles)]
        if synchronize is not None:  # the profile switches' copies must finish before any enqueue on another stream
            synchronize()

    def _make_slot(self, index: int, profile: ShapeProfile) -> _Slot:
        context = self.engine.create_execution_context()
        if context is None:
            raise EngineError(f"{self.shapes.source}: TensorRT could not create an execution context (GPU memory?)")
        try:
            accepted = context.set_optimization_profile_async(index, self._stream())
        except RuntimeError as exc:  # the Python binding raises where the C++ call returns false
            raise EngineError(f"{self.shapes.source}: TensorRT refused optimization profile {index} ({exc})") from exc
        if not accepted:
            raise EngineError(f"{self.shapes.source}: TensorRT refused optimization profile {index}")
        largest = profile.get("x")[2][0]
        buffers = {name: torch.empty(input_shape(name, largest, self.shapes.size), dtype=self.dtypes[name],
                                     device=self.device) for name in [*self.inputs, "eps"]}
        for name, tensor in buffers.items():
            if not context.set_tensor_address(name, tensor.data_ptr()):
                raise EngineError(f"{self.shapes.source}: TensorRT refused the address of tensor {name!r}")
        return _Slot(context, buffers)

    def prepare(self, profile: int, batch: int) -> _Slot:
        """The profile's slot with its input shapes set for ``batch`` (only when the batch changes)."""
        slot = self.slots[profile]
        if slot.batch != batch:
            for name in self.inputs:
                if not slot.context.set_input_shape(name, input_shape(name, batch, self.shapes.size)):
                    raise EngineError(f"{self.shapes.source}: TensorRT rejected input {name!r} of batch {batch}")
            slot.batch = batch
        return slot

    def load(self, slot: _Slot, feeds: dict[str, torch.Tensor]) -> None:
        """Copy inputs into the bound buffers (device to device, cast to the engine's dtypes)."""
        for name, value in feeds.items():
            slot.buffers[name][: value.shape[0]].copy_(value)

    def _stream(self) -> int:
        return check_stream_handle(self.stream(), self.shapes.source)

    def enqueue(self, slot: _Slot) -> None:
        if not slot.context.execute_async_v3(self._stream()):
            raise EngineError(f"{self.shapes.source}: TensorRT execute_async_v3 failed")

    def output(self, slot: _Slot, batch: int) -> torch.Tensor:
        """A view of the bound output buffer (overwritten by the next call)."""
        return slot.buffers["eps"][:batch]


class TensorRTDenoiser:
    """ε-prediction with a TensorRT engine (same interface as ``ddpg.models.Denoiser``, without gradients).

    ``engine``: a ``.plan`` built by ddpg (its sidecar ``.plan.json`` must sit next to it; an ``.onnx`` export is
    built by ``ddpg.export.tensorrt_build.engine_plan`` first, this backend only loads and runs). ``class_labels``:
    int or (B,) tensor, required for class-conditional priors. ``cuda_graph``: capture the engine call (fixed-shape
    engines only). ``trt``: the tensorrt module (tests). ``graph_safe``: a fixed-shape engine, whose call a whole
    sampler step around it may capture.
    """

    backend = "tensorrt"
    capabilities = TENSORRT_CAPABILITIES
    compile_mode = None
    prior = None

    def __init__(self, engine: str | Path, *, device: str | torch.device = "cuda",
                 class_labels: torch.Tensor | int | None = None, cuda_graph: bool = False,
                 trt=None):
        if trt is None:
            try:
                trt = require_tensorrt()
            except ConfigError as exc:
                raise ConfigError(f"backend 'tensorrt' not available: {exc}") from exc
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ConfigError(f"device {device}: the tensorrt backend runs on CUDA devices only")
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device} requested but this torch sees no CUDA GPU")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        path = Path(engine)
        if path.suffix == ".onnx":
            raise ParameterError("engine", path, "an ONNX export, not a TensorRT plan; build the plan first "
                                 "(ddpg export --format tensorrt, or ddpg.export.tensorrt_build.engine_plan)")
        if not path.is_file():
            raise ParameterError("engine", path, "file not found")
        self.engine_path = path
        self.sidecar = read_sidecar(path)
        self.info = EngineInfo.from_props(self.sidecar["onnx_metadata"], path)
        key = sidecar_key(self.sidecar, path)
        self.shapes = EngineShapes(list(key.profiles), path)
        self.precision: str = key.precision
        self.config: dict = dict(self.info.config)
        self.name: str | None = self.info.prior
        self.schedule = self.info.schedule
        self.prediction = prediction_type(self)
        self.class_labels = engine_class_labels(self.info, class_labels, self.device)
        if cuda_graph and not self.shapes.fixed:
            takes = "; ".join(p.describe() for p in self.shapes.profiles)
            raise ConfigError(f"{path}: CUDA-graph mode needs a fixed-shape engine (one profile with min = max, "
                              f"e.g. --batch 1); this one takes {takes}")
        self.cuda_graph = cuda_graph
        self.graph_safe = self.shapes.fixed
        blob = path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != self.sidecar["plan"].get("sha256"):
            raise EngineError(f"{path}: the plan does not match the sha256 in its sidecar (replaced or truncated); "
                              "rebuild it with `ddpg export --format tensorrt`")
        check_engine_environment(self.sidecar, path, str(trt.__version__), gpu_info(self.device))
        with torch.cuda.device(self.device):
            engine_obj = deserialize_plan(trt, blob)
            if engine_obj is None:
                raise EngineError(f"{path}: TensorRT {trt.__version__} could not deserialize this plan; rebuild it "
                                  "with `ddpg export --format tensorrt`")
            self._side = SideStream(self.device)
            self.bindings = Bindings(trt, engine_obj, self.shapes, self.device, lambda: self._side.handle,
                                     self._side.synchronize)
        self._engine = engine_obj
        self._graph: torch.cuda.CUDAGraph | None = None

    @classmethod
    def from_bindings(cls, bindings: Bindings, side: SideStream, *, cuda_graph: bool = False) -> TensorRTDenoiser:
        """A denoiser that only runs ``bindings`` (an engine the caller deserialized and bound, launching on ``side``):
        no sidecar checks, no metadata (``info`` None, ``config`` {}, so the default schedule and ε prediction, no
        prior name) and no class labels."""
        if cuda_graph and not bindings.shapes.fixed:
            raise ConfigError(f"{bindings.shapes.source}: CUDA-graph mode needs a fixed-shape engine")
        den = cls.__new__(cls)
        den.device, den.shapes, den.engine_path = bindings.device, bindings.shapes, Path(bindings.shapes.source)
        den.class_labels, den.cuda_graph, den.graph_safe = None, cuda_graph, bindings.shapes.fixed
        den.info, den.config, den.name = None, {}, None
        den.schedule, den.prediction = Schedule.from_config(den.config), prediction_type(den)
        den.bindings, den._side, den._graph = bindings, side, None
        return den

    def options(self) -> dict:
        return {}

    def _feeds(self, x_t: torch.Tensor, t) -> dict[str, torch.Tensor]:
        batch, source = x_t.shape[0], str(self.engine_path)
        feeds = {"x": x_t.detach(), "t": timesteps_for_batch(t, batch, x_t.device, source).detach()}
        if self.class_labels is not None:
            feeds["y"] = labels_for_batch(self.class_labels, batch, source)
        return feeds

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps (B,3,H,W) float32 on x_t's device for x_t (B,3,H,W) and timestep values t (B,) (or one value)."""
        profile = self.shapes.select(tuple(x_t.shape))  # before any CUDA call
        if x_t.device != self.device:
            raise EngineError(f"{self.engine_path}: x_t is on {x_t.device} but this engine runs on {self.device}; "
                              "move the tensors to the GPU first (no host round trip here)")
        batch = x_t.shape[0]
        with torch.cuda.device(self.device):
            slot = self.bindings.prepare(profile, batch)
            feeds = self._feeds(x_t, t)
            if self.cuda_graph and not torch.cuda.is_current_stream_capturing():
                self.bindings.load(slot, feeds)
                self._replay(slot)
                return self.bindings.output(slot, batch).float().clone()
            return self._run(slot, feeds, batch)

    def _run(self, slot: _Slot, feeds: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        """Inputs copied in, the engine and the output copy, all on the engine's stream, in order (a call never
        overwrites the bound buffers while an earlier one still uses them, whichever stream issued it)."""
        capturing = torch.cuda.is_current_stream_capturing()
        caller = torch.cuda.current_stream(self.device)
        with self._side.ordered():
            self.bindings.load(slot, feeds)
            self.bindings.enqueue(slot)
            eps = self.bindings.output(slot, batch).float().clone()
        if not capturing:  # inside a capture eps lives in the graph's private pool, never freed by a replay
            eps.record_stream(caller)  # allocated on the engine's stream, used on the caller's
        return eps

    def _replay(self, slot: _Slot) -> None:
        """The engine call as a CUDA graph: captured on the first call (one eager warm-up first, which lets
        TensorRT finish its lazy setup), then replayed on the current stream. The capture holds ``CAPTURE_LOCK``
        (no prefetch thread may launch CUDA work meanwhile)."""
        if self._graph is None:
            with CAPTURE_LOCK:
                with self._side.ordered():
                    self.bindings.enqueue(slot)
                # an explicit capture stream on the engine's device (torch's shared default capture stream lives
                # on whichever device was current when the process made its first graph), as GraphRunner does
                capture = torch.cuda.Stream(self.device)
                capture.wait_stream(torch.cuda.current_stream(self.device))
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=capture, capture_error_mode="thread_local"), self._side.ordered():
                    self.bindings.enqueue(slot)  # on the engine's stream, forked from and joined to the capture
            self._graph = graph
        self._graph.replay()


__all__ = ["Bindings", "EngineShapes", "TensorRTDenoiser", "input_shape", "torch_dtype"]
