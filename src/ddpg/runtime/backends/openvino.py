"""OpenVINO denoiser: an exported prior in OpenVINO IR (``ddpg export --format openvino``) on the CPU, behind the
torch denoiser interface.

``OpenVINODenoiser(path)(x_t (B,3,H,W) float32, t (B,) float32) -> eps (B,3,H,W) float32`` (CPU tensors). The
IR keeps the export's dynamic batch; the CPU plugin compiles it once and takes any batch in the export's range.
The arithmetic is always an explicit choice: the export's precision (``ddpg.precision``) sets
``INFERENCE_PRECISION_HINT`` (fp32 → f32, bf16 → bf16, int8 → f32 for the layers NNCF left unquantized), because
the CPU plugin otherwise lowers float32 to bfloat16 by itself on CPUs with native bf16. ``threads`` sets
``INFERENCE_NUM_THREADS`` (default: the ``--threads`` count, :func:`~ddpg.threads.applied_threads`; when none was
applied, OpenVINO's default, every core); the performance hint is LATENCY (one stream:
a whole batch runs as one request, which is what the sampler issues).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import torch

from ddpg.engine_metadata import EngineError, EngineInfo, read_metadata
from ddpg.errors import ConfigError
from ddpg.models.denoiser import prediction_type
from ddpg.threads import applied_threads
from ddpg.versions import install_hint

from .capabilities import OPENVINO_CAPABILITIES
from .engine_inputs import engine_class_labels, labels_for_batch, timesteps_for_batch

# export precision → the CPU plugin's INFERENCE_PRECISION_HINT (int8: the IR's FakeQuantize layers run in int8,
# every other layer in float32)
INFERENCE_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
log = logging.getLogger("ddpg")


def openvino_module():
    """The ``openvino`` package; ConfigError naming the extra when it is not installed."""
    try:
        import openvino
    except ImportError as exc:
        raise ConfigError(f"backend 'openvino' not available: the openvino package is not installed "
                          f"({install_hint('openvino')})") from exc
    return openvino


def warn_about_gate(info: EngineInfo) -> None:
    """Log a warning when a reduced-precision IR failed its quality gate or was never gated: it is never used
    silently."""
    if info.precision == "fp32":
        return
    gate = info.quality_gate
    if gate is None:
        log.warning("%s: a %s export without a recorded quality gate (export it with --gate DIR to measure its "
                    "restorations against fp32)", info.source, info.precision)
    elif not gate.get("passed"):
        log.warning("%s: this %s export FAILED its quality gate (mean PSNR drop vs fp32 above %s dB): %s",
                    info.source, info.precision, gate.get("bound_db"),
                    {task: round(row["drop"], 3) for task, row in gate.get("per_task", {}).items()})


def compile_config(precision: str, threads: int | None = None, performance_hint: str = "LATENCY") -> dict:
    """The CPU plugin's configuration for an export of ``precision``: the inference precision always explicit."""
    if precision not in INFERENCE_HINTS:
        raise EngineError(f"precision {precision!r}: an OpenVINO export is one of {', '.join(INFERENCE_HINTS)}")
    if performance_hint not in PERFORMANCE_HINTS:
        raise ConfigError(f"performance_hint {performance_hint!r}: choose one of {', '.join(PERFORMANCE_HINTS)}")
    config = {"INFERENCE_PRECISION_HINT": INFERENCE_HINTS[precision], "PERFORMANCE_HINT": performance_hint}
    if threads is not None:
        if int(threads) < 1:
            raise ConfigError(f"threads {threads}: must be >= 1")
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def compile_ir(path: str | Path, precision: str, threads: int | None = None, performance_hint: str = "LATENCY"):
    """The IR at ``path`` compiled for the CPU with :func:`compile_config`; EngineError when OpenVINO cannot read
    it or did not take the precision it was given."""
    ov = openvino_module()
    config = compile_config(precision, threads, performance_hint)
    core = ov.Core()
    try:
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    except Exception as exc:  # OpenVINO raises RuntimeError and its own types for unreadable or bad models
        raise EngineError(f"{path}: OpenVINO cannot compile this model for the CPU: {exc}") from exc
    granted, wanted = compiled.get_property("INFERENCE_PRECISION_HINT"), config["INFERENCE_PRECISION_HINT"]
    if granted != getattr(ov.Type, wanted):
        raise EngineError(f"{path}: asked OpenVINO for {wanted} inference, it compiled {granted} (this CPU may lack "
                          "native bf16; `ddpg doctor` lists what it supports)")
    return compiled


class OpenVINODenoiser:
    """ε-prediction with an OpenVINO IR export on the CPU (same interface as ``ddpg.models.Denoiser``, without
    gradients). ``class_labels``: an int or (B,) int tensor, required for class-conditional exports. Calls from
    several threads are serialised (one infer request). A bf16/int8 IR that failed its quality gate, or has none,
    is loaded with a warning (``gate_warning=False``: the gate's own run)."""

    backend = "openvino"
    capabilities = OPENVINO_CAPABILITIES
    graph_safe = False
    compile_mode = None
    prior = None

    def __init__(self, engine: str | Path, *, device: str | torch.device = "cpu",
                 class_labels: torch.Tensor | int | None = None, threads: int | None = None,
                 performance_hint: str = "LATENCY", gate_warning: bool = True):
        self.engine_path = Path(engine)
        if self.engine_path.suffix != ".xml":
            raise EngineError(f"{self.engine_path}: backend 'openvino' loads an OpenVINO IR (.xml with its .bin, "
                              "from `ddpg export --format openvino`)")
        self.device = torch.device(device)
        if self.device.type != "cpu":
            raise ConfigError(f"device {device}: the openvino backend runs on the CPU")
        self.info: EngineInfo = read_metadata(self.engine_path)
        self.config: dict = dict(self.info.config)
        self.name: str | None = self.info.prior
        self.schedule = self.info.schedule
        self.prediction = prediction_type(self)
        self.precision = self.info.precision
        self.threads = threads if threads is not None else applied_threads()
        self.class_labels = engine_class_labels(self.info, class_labels, self.device)
        if gate_warning:  # off only while the gate itself measures this IR
            warn_about_gate(self.info)
        self.compiled = compile_ir(self.engine_path, self.precision, self.threads, performance_hint)
        self._request = self.compiled.create_infer_request()
        self._output = self.compiled.output("eps")
        self._lock = threading.Lock()

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps (B,3,H,W) float32 on the CPU, for x_t (B,3,H,W) and timestep values t (B,) (or one value)."""
        self.info.check_input(tuple(x_t.shape))
        if x_t.device.type != "cpu":
            raise EngineError(f"{self.engine_path}: x_t is on {x_t.device}; the openvino backend runs on the CPU")
        t = timesteps_for_batch(t, x_t.shape[0], x_t.device, str(self.engine_path))
        feeds = {"x": x_t.detach().float().contiguous().numpy(), "t": t.detach().contiguous().numpy()}
        labels = labels_for_batch(self.class_labels, x_t.shape[0], str(self.engine_path))
        if labels is not None:
            feeds["y"] = labels.numpy()
        with self._lock:
            eps = self._request.infer(feeds)[self._output]
            return torch.from_numpy(np.array(eps, dtype=np.float32, copy=True))  # the request reuses its buffer

    def options(self) -> dict:
        return {} if self.threads is None else {"threads": self.threads}
