"""One benchmarked configuration (:class:`BenchConfig`), each option's default, help and flags written once on
its field (:mod:`ddpg.schema`); torch-free, so the command line builds ``ddpg bench``'s options from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ddpg.checks import DEFAULT_SIGMA_Y
from ddpg.errors import ConfigError
from ddpg.schema import option
from ddpg.threads import check_threads, threads_option

BACKENDS = ("torch", "onnxruntime", "tensorrt", "openvino")


@dataclass
class BenchConfig:
    """One benchmarked configuration. ``plain``: the unmodified eager path (``ddpg_sample`` + ``Denoiser``),
    the baseline the fast path is compared with; ``batches``: the batch sizes timed (``--batch 1,8,32``)."""

    prior: str | dict = option("face64", kind=str, help="Prior name, YAML path, or inline mapping "
                                                        "'{kind: ddpm, ch: 16, ...}'.")
    checkpoint: str | None = option(None, help="Weights file, or 'auto' (bundled/cached); default random weights.")
    backend: str = option("torch", help="torch | onnxruntime | tensorrt | openvino")
    engine: str | None = option(None, help="ONNX model / TensorRT plan / OpenVINO IR (default: exported from the "
                                           "prior).")
    precision: str = option("fp32", help="fp32 | fp16 | bf16 (the UNet torso; guidance stays fp32); int8: an "
                                         "OpenVINO int8 IR given with --engine.")
    batches: list[int] = field(default_factory=lambda: [1])
    steps: int = option(100, help="Sampling steps per restoration.")
    compile: bool = option(False, help="torch.compile the UNet (torch backend).")
    compile_mode: str = option("default", help="torch.compile mode.")
    cuda_graph: bool = option(False, help="Capture the whole sampler step in a CUDA graph.")
    channels_last: bool | None = option(None, flags=("--channels-last/--no-channels-last",),
                                        help="Channels-last UNet (default: only with --compile).")
    plain: bool = option(False, help="The unmodified eager fp32 path (the baseline).")
    size: int | None = option(None, help="Image size (default: the prior's).")
    task: str = option("sr4", help="Degradation (sr4 uses the FFT operator).")
    sigma_y: float = option(DEFAULT_SIGMA_Y, flags=("--sigma-y",), help="Measurement noise std on the [0, 1] scale.")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    threads: int | str = threads_option()
    iters: int = option(20, help="Timed UNet / guidance calls per batch size.")
    warmup: int = option(3, help="Untimed calls before timing.")
    repeats: int = option(1, help="Timed whole restorations per batch size (after one warm-up).")
    accuracy: bool = option(True, flags=("--accuracy/--no-accuracy",), help="Restore one image with this "
                            "configuration and with the plain fp32 path on the same noise and compare (against the "
                            "ground truth too with a --checkpoint); not for --plain.")
    profile: bool = option(True, flags=("--profile/--no-profile",),
                           help="torch.profiler summary of a few UNet and guidance calls per batch size.")
    tile: int | None = option(None, help="Run the UNet over SIZE-px tiles blended per step (with a --size larger "
                                         "than the prior's); reports tiles/s and seconds per megapixel.")
    tile_overlap: int | None = option(None, help="--tile: least overlap of neighbouring tiles, px (default: a "
                                                 "quarter of the tile).")
    tile_batch: int | None = option(None, help="--tile: tiles per UNet call (default: 16 with a PyTorch prior, an "
                                               "engine's largest batch).")
    seed: int = 0

    def validate(self) -> None:
        from ddpg.precisions import parse_precision  # torch: only when a benchmark runs
        from ddpg.runtime.backends.capabilities import backend_capabilities

        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.precision == "int8":
            if self.engine is None:
                raise ConfigError("--precision int8: give the int8 OpenVINO IR with --engine (ddpg export --format "
                                  "openvino --precision int8 --calibration DIR)")
        else:
            parse_precision(self.precision)
        check_threads(self.threads)
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigError(f"--batch {self.batches}: give positive batch sizes, e.g. 1,8,32")
        for name in ("steps", "iters", "repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {self.warmup}")
        if self.tile is not None and (self.tile < 8 or not 0 <= self.overlap < self.tile):
            raise ConfigError(f"--tile {self.tile} --tile-overlap {self.tile_overlap}: need a tile >= 8 px and an "
                              "overlap in [0, tile)")
        if self.tile_batch is not None and self.tile_batch < 1:
            raise ConfigError(f"--tile-batch {self.tile_batch}: must be at least 1")
        engine = backend_capabilities(self.backend).engine_file
        if self.plain and (self.compile or self.cuda_graph or engine or self.precision != "fp32"):
            raise ConfigError("--plain is the eager fp32 torch baseline: no --compile, --cuda-graph, other backend "
                              "or precision")

    @property
    def label(self) -> str:
        from ddpg.runtime.backends.capabilities import backend_capabilities
        from ddpg.runtime.fast_denoiser import default_channels_last  # torch: only when a benchmark runs

        if self.plain:
            return "torch fp32 eager (plain path)"
        parts = [self.backend, self.precision]
        if not backend_capabilities(self.backend).engine_file:
            layout = default_channels_last(self.compile) if self.channels_last is None else self.channels_last
            parts += ["channels-last"] if layout else []
            parts += [f"compile({self.compile_mode})"] if self.compile else []
        parts += ["+graph"] if self.cuda_graph else []
        parts += [f"tiles {self.tile}/{self.overlap}"] if self.tile is not None else []
        return " ".join(parts)

    @property
    def overlap(self) -> int:
        """--tile's overlap in pixels (its default: a quarter of the tile)."""
        return (self.tile or 0) // 4 if self.tile_overlap is None else self.tile_overlap
