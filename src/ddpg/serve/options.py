"""Everything ``ddpg serve`` takes (:class:`ServeOptions`), each option's default, help and flags written once on
its field (:mod:`ddpg.schema`); torch-free, so the command line builds ``ddpg serve``'s options from it."""

from __future__ import annotations

from dataclasses import dataclass

from ddpg.schema import option
from ddpg.threads import threads_option


@dataclass
class ServeOptions:
    """Everything ``ddpg serve`` takes: the prior and its engine, where to listen, batching and limits."""

    prior: str | None = option("face64", help="Prior name or YAML config (torch backend).")
    backend: str = option("torch", help="torch | onnxruntime | tensorrt | openvino (CPU)")
    engine: str | None = option(None, help="ONNX model, TensorRT plan or OpenVINO IR (.xml) for --backend "
                                           "onnxruntime/tensorrt/openvino (tensorrt, openvino: an .onnx is converted "
                                           "once into the engine cache).")
    device: str = option("cpu", help="cpu | cuda | cuda:N (one process per GPU).")
    threads: int | str = threads_option()
    class_label: int | None = option(None, help="Class for class-conditional priors.")
    host: str = option("127.0.0.1", help="Address to bind (localhost by default).")
    port: int = option(8000, help="TCP port (0: one the OS picks; the URL is printed once bound).")
    max_batch: int | str = option(8, kind=str, help="Samples per engine tick at most, or auto: the smallest batch "
                                  "within 10 % of the best images/s of the denoiser timed at batch 1, 2, 4, … (up to "
                                  "64) at start-up.")
    max_queue: int = option(64, help="Requests waiting for admission at most (beyond: 429).")
    engine_batch: int | None = option(None, help="Pad every denoiser call to this batch (fixed-batch engines).")
    policy: str = option("continuous", help="continuous | request (request-level batching) | single.")
    batch_wait_ms: float = option(50.0, help="--policy request: wait up to this long to fill a batch.")
    max_pixels: int = option(1 << 20, help="Largest image accepted, in pixels (beyond: 413).")
    max_body_bytes: int = 32 << 20
    request_timeout_s: float | None = option(600.0, flags=("--request-timeout",),
                                             help="Default per-request deadline in seconds (504 after).")
    drain_timeout_s: float = option(30.0, flags=("--drain-timeout",),
                                    help="On SIGTERM: seconds to finish the requests in flight.")
    token_file: str | None = option(None, help="File holding a bearer token every /v1 route, /readyz and /metrics "
                                    "need (not /healthz, nor the page at / and its assets).")
    job_ttl_s: float = option(3600.0, flags=("--job-ttl",), help="Seconds a finished job and its result are kept "
                              "(then 404).")
    max_jobs: int = option(100, help="Finished jobs kept at most (beyond: the oldest removed with their files).")
    test_hooks: bool = option(False, hidden=True, help="Enable POST /test/pause.")
