"""Build TensorRT engines from ``ddpg export`` ONNX models (TensorRT 10 and 11), with an engine cache.

Everything but :func:`_trt_build` is pure Python: :func:`select_precision`
chooses the precision mechanism from TensorRT's major version, :func:`plan_build` turns the request into a
:class:`BuildPlan` (flags, profiles, limits), the :class:`~ddpg.engine_sidecar.EngineKey` decides
whether a cached plan is reused, and :func:`build_engine` ties them together.

Precision (docs/deployment.md §5). TensorRT 11 removed weak typing (``BuilderFlag.FP16/BF16``, precision
constraints); every network is strongly typed and takes each layer's precision from the ONNX graph, so an
fp16/bf16 engine comes from an fp16/bf16 export (``ddpg export --precision fp16``) and a ``precision`` that
disagrees with the ONNX is an error. On TensorRT 10 a mixed-precision ONNX is built with the
``STRONGLY_TYPED`` network flag (the same artifact as on 11), and the FP16/BF16 builder flags are used only
for an fp32 ONNX. TF32 is cleared unless asked for, so an fp32 engine matches PyTorch to ~1e-5.

TensorRT Python API used here, checked against NVIDIA's documentation pages and, for exact signatures and
enum members, against the bindings themselves (``python/src/infer/pyCore.cpp``, ``python/src/parsers/pyOnnx.cpp``
and ``python/docstrings/`` of https://github.com/NVIDIA/TensorRT, branches ``release/10.16`` and ``release/11.0``):

- ``Logger(Logger.WARNING)``, ``Builder(logger)``, ``create_network(flags=0)`` with
  ``1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)`` (10.x; "deprecated ... retained for API compatibility
  but is ignored" on 11, and ``EXPLICIT_BATCH``, never used here, is gone), ``create_builder_config()``,
  ``create_optimization_profile()``, ``build_serialized_network(network, config)`` (IHostMemory, or None):
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html ,
  https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/_static/python-api/infer/Core/Builder.html
- ``OnnxParser(network, logger)``, ``parse_from_file(model)`` (a path, so external data resolves next to the
  model), ``num_errors``, ``get_error(index)``:
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/parsers/Onnx/pyOnnx.html
- IBuilderConfig ``set_memory_pool_limit(pool, pool_size)`` with ``MemoryPoolType.WORKSPACE``,
  ``builder_optimization_level`` (0..5, default 3), ``set_flag``/``clear_flag(BuilderFlag.TF32)`` (TF32 is kept in
  11), ``add_optimization_profile(profile)``, ``create_timing_cache(serialized_timing_cache)`` (``b""``: a new
  cache), ``set_timing_cache(cache, ignore_mismatch) -> bool``; IOptimizationProfile
  ``set_shape(input, min, opt, max)``; ITimingCache ``serialize()``:
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/BuilderConfig.html ,
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/OptimizationProfile.html ,
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/TimingCache.html
- ``Runtime(logger).deserialize_cuda_engine(serialized_engine)`` ("the ICudaEngine, or None if it could not be
  deserialized"): https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Runtime.html
- ``BuilderFlag.FP16/BF16``: deprecated in 10.12 ("superseded by strong typing") and removed in 11 together with
  ``INT8/FP8/INT4/FP4`` and ``OBEY/PREFER_PRECISION_CONSTRAINTS`` (10.x → 11.x migration guide and removed-API table):
  https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/api/migration/tensorrt-10x-to-11x.html ,
  https://docs.nvidia.com/deeplearning/tensorrt/11.4.0/api/migration/tensorrt-10x-to-11x-python-api-patterns.html ,
  https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html
- Timing cache semantics (create, attach, build, then serialize the same cache; specific to the device, CUDA and
  TensorRT version): https://docs.nvidia.com/deeplearning/tensorrt/10.16.1/performance/builder-performance.html
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ddpg.engine_metadata import EngineInfo, read_metadata
from ddpg.engine_sidecar import EngineKey, GpuInfo, ShapeProfile, sidecar_path
from ddpg.errors import ConfigError, DdpgError
from ddpg.io import atomic_write
from ddpg.precisions import PRECISIONS, parse_precision
from ddpg.runtime.backends.tensorrt_env import deserialize_plan, gpu_info, require_tensorrt, trt_logger
from ddpg.versions import versions

from .defaults import DEFAULT_OPT_LEVEL, DEFAULT_WORKSPACE_GIB
from .engine_cache import (
    CacheStatus,
    as_profiles,
    cache_status,
    cached_engine_path,
    check_profiles,
    default_cache_dir,
    hash_onnx,
    make_sidecar,
    profiles_for,
    timing_cache_path,
    write_engine,
)

_ONNX_LOW_PRECISION = {10: "fp16", 16: "bf16"}  # onnx.TensorProto.FLOAT16 / BFLOAT16


class TensorRTBuildError(DdpgError, RuntimeError):
    """TensorRT could not parse the ONNX model or build an engine from it."""


# ---------------------------------------------------------------------------------------------------------
# TensorRT and the GPU


def trt_major(version: str) -> int:
    """The major version of a TensorRT version string such as ``"10.9.0.34"``."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise ConfigError(f"unrecognised TensorRT version {version!r}") from None


@dataclass(frozen=True)
class TrtEnvironment:
    """What a build depends on besides its inputs: the TensorRT version and the GPU."""

    tensorrt_version: str
    gpu: GpuInfo


def detect_environment(trt=None, device=None) -> TrtEnvironment:
    trt = trt if trt is not None else require_tensorrt()
    return TrtEnvironment(str(trt.__version__), gpu_info(device))


# ---------------------------------------------------------------------------------------------------------
# The plan (pure)


def graph_precision(onnx_path: str | Path) -> str:
    """fp16 / bf16 when the graph holds half-precision initializers or casts (a mixed-precision export),
    else fp32. Reads the graph only (no external data)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    found = {_ONNX_LOW_PRECISION[t.data_type] for t in model.graph.initializer if t.data_type in _ONNX_LOW_PRECISION}
    for node in model.graph.node:
        if node.op_type == "Cast":
            found |= {_ONNX_LOW_PRECISION[a.i] for a in node.attribute if a.name == "to" and a.i in _ONNX_LOW_PRECISION}
    if len(found) > 1:
        raise ConfigError(f"{onnx_path}: the graph mixes fp16 and bf16 tensors; ddpg exports one low precision")
    return found.pop() if found else "fp32"


def onnx_precision(onnx_path: str | Path, info: EngineInfo) -> str:
    """The export's precision (``ddpg.precision``), checked against the graph's tensor types."""
    declared, found = info.precision, graph_precision(onnx_path)
    if declared not in PRECISIONS:
        raise ConfigError(f"{onnx_path}: unknown ddpg.precision {declared!r}")
    if declared != found:
        raise ConfigError(f"{onnx_path}: its metadata says {declared} but the graph is {found}; re-export it")
    return declared


def select_precision(tensorrt_version: str, onnx_prec: str, requested: str | None
                     ) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(engine precision, NetworkDefinitionCreationFlag names, BuilderFlag names to set) for an ONNX graph of
    precision ``onnx_prec`` and a requested precision (None: the ONNX's). See the module docstring."""
    major = trt_major(tensorrt_version)
    if major < 10:
        raise ConfigError(f"TensorRT {tensorrt_version} is too old: ddpg builds with TensorRT 10 or 11")
    precision = onnx_prec if requested is None else requested
    parse_precision(precision, "--precision")
    if major >= 11:
        if precision != onnx_prec:
            raise ConfigError(f"--precision {precision}: TensorRT {tensorrt_version} is strongly typed, so the engine "
                              f"runs in the ONNX graph's precision ({onnx_prec}); export the ONNX model with "
                              f"`ddpg export --precision {precision}` instead")
        return precision, (), ()
    if onnx_prec != "fp32":
        if precision != onnx_prec:
            raise ConfigError(f"--precision {precision}: the ONNX graph is already mixed {onnx_prec} and is built "
                              f"strongly typed as {onnx_prec}; export with `ddpg export --precision {precision}` "
                              "for another precision")
        return precision, ("STRONGLY_TYPED",), ()
    builder_flags = {"fp32": (), "fp16": ("FP16",), "bf16": ("BF16",)}[precision]
    return precision, (), builder_flags


@dataclass(frozen=True)
class BuildPlan:
    """Everything ``_trt_build`` needs, decided without TensorRT. Flag names are TensorRT enum member names."""

    onnx_path: Path
    inputs: tuple[str, ...]
    onnx_precision: str
    precision: str
    tensorrt_version: str
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    cleared_flags: tuple[str, ...]
    profiles: tuple[ShapeProfile, ...]
    opt_level: int
    workspace_bytes: int

    @property
    def flags(self) -> tuple[str, ...]:
        """All build flags, as they enter the engine key."""
        return tuple(sorted([f"network:{f}" for f in self.network_flags] + [f"set:{f}" for f in self.builder_flags]
                            + [f"clear:{f}" for f in self.cleared_flags]))

    def key(self, onnx_sha256: str, gpu: GpuInfo) -> EngineKey:
        return EngineKey(onnx_sha256=onnx_sha256, tensorrt_version=self.tensorrt_version, gpu_name=gpu.name,
                         compute_capability=gpu.compute_capability, precision=self.precision,
                         profiles=self.profiles, opt_level=self.opt_level, workspace_bytes=self.workspace_bytes,
                         flags=self.flags)


def plan_build(onnx_path: str | Path, info: EngineInfo, *, tensorrt_version: str, gpu: GpuInfo, profiles=None,
               precision: str | None = None, opt_level: int = DEFAULT_OPT_LEVEL,
               workspace_gib: float = DEFAULT_WORKSPACE_GIB, tf32: bool = False) -> BuildPlan:
    """The build for ``onnx_path`` (whose ddpg metadata is ``info``) on TensorRT ``tensorrt_version`` and
    ``gpu``. ``profiles``: None (one profile over the export's batch range), a ShapeProfile, a
    name → (min, opt, max) mapping, or a list of them."""
    if not isinstance(opt_level, int) or not 0 <= opt_level <= 5:
        raise ConfigError(f"--opt-level {opt_level!r}: TensorRT's builder optimization level is an integer 0..5 "
                          "(3 is the default)")
    if not workspace_gib > 0:
        raise ConfigError(f"--workspace {workspace_gib!r}: the workspace limit must be a positive number of GiB")
    shape_profiles = profiles_for(info) if profiles is None else as_profiles(profiles)
    check_profiles(shape_profiles, info)
    onnx_prec = onnx_precision(onnx_path, info)
    engine_prec, network_flags, builder_flags = select_precision(tensorrt_version, onnx_prec, precision)
    if engine_prec == "bf16" and _cc_tuple(gpu.compute_capability) < (8, 0):
        raise ConfigError(f"--precision bf16: {gpu.name} (sm{gpu.compute_capability}) has no bf16 support; TensorRT "
                          "bf16 needs compute capability 8.0 or newer — use fp16")
    return BuildPlan(onnx_path=Path(onnx_path), inputs=tuple(info.inputs), onnx_precision=onnx_prec,
                     precision=engine_prec, tensorrt_version=str(tensorrt_version), network_flags=network_flags,
                     builder_flags=builder_flags, cleared_flags=() if tf32 else ("TF32",),
                     profiles=tuple(shape_profiles), opt_level=opt_level,
                     workspace_bytes=int(round(workspace_gib * 2**30)))


def _cc_tuple(cc: str) -> tuple[int, int]:
    major, _, minor = str(cc).partition(".")
    return int(major), int(minor or 0)


# ---------------------------------------------------------------------------------------------------------
# The calls into TensorRT


def _trt_build(plan: BuildPlan, trt, timing_cache: bytes | None,
               log: Callable[[str], None]) -> tuple[bytes, bytes | None]:
    """Parse, configure and build: (serialized plan, serialized timing cache or None)."""
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(plan.onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no details"
        raise TensorRTBuildError(f"{plan.onnx_path}: TensorRT {plan.tensorrt_version} cannot parse this ONNX "
                                 f"model: {errors}")
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(names) != sorted(plan.inputs):
        raise TensorRTBuildError(f"{plan.onnx_path}: the parsed network has inputs {names}, its metadata says "
                                 f"{list(plan.inputs)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    config.builder_optimization_level = plan.opt_level
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    for shape_profile in plan.profiles:
        profile = builder.create_optimization_profile()
        for name, lo, opt, hi in shape_profile.shapes:
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        cache = config.create_timing_cache(timing_cache)  # None when TensorRT cannot read the blob
        if cache is None or not config.set_timing_cache(cache, False):
            log("the timing cache does not match this GPU/TensorRT; starting an empty one")
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError(f"{plan.onnx_path}: TensorRT {plan.tensorrt_version} failed to build the engine "
                                 "(see the TensorRT messages above)")
    return bytes(serialized), (bytes(cache.serialize()) if cache is not None else None)


# ---------------------------------------------------------------------------------------------------------
# The cache-aware build


@dataclass
class EngineRecord:
    """A built or reused engine. ``reason``: why it was built (or "cached engine matches")."""

    path: Path
    sidecar_path: Path
    key: EngineKey
    plan: BuildPlan
    cache_hit: bool
    reason: str
    build_seconds: float | None
    timing_cache: Path | None


def _ddpg_props(info: EngineInfo) -> dict[str, str]:
    return {k: v for k, v in info.raw.items() if k.startswith("ddpg.")}


def _versions(trt) -> dict[str, str | None]:
    """``ddpg.versions`` (with onnx) plus the TensorRT and CUDA versions an engine was built with (the GPU is
    recorded in the sidecar's ``gpu``)."""
    return {**versions(libraries=("onnx",)), "tensorrt": str(trt.__version__), "cuda": torch.version.cuda}


def build_engine(onnx_path: str | Path, *, out: str | Path | None = None, profiles=None,
                 precision: str | None = None, opt_level: int = DEFAULT_OPT_LEVEL,
                 workspace_gib: float = DEFAULT_WORKSPACE_GIB, timing_cache: str | Path | bool | None = None,
                 cache_dir: str | Path | None = None, force: bool = False, tf32: bool = False,
                 verify: bool = True, device=None, log: Callable[[str], None] | None = None,
                 trt=None, environment: TrtEnvironment | None = None) -> EngineRecord:
    """Build (or reuse) a TensorRT engine for an ONNX model written by ``ddpg export``.

    ``out``: the plan file (default ``<cache_dir>/<stem>-<key digest>.plan``); its sidecar is ``out + ".json"``.
    ``profiles``: see :func:`plan_build` (default: the export's batch range). ``precision``: None = the
    ONNX's; see :func:`select_precision`. ``timing_cache``: None = ``<cache_dir>/timing/<gpu>-trt<ver>.cache``,
    False = none, or a file. ``cache_dir``: default :func:`~ddpg.export.engine_cache.default_cache_dir`.
    A plan whose sidecar key matches and whose bytes are intact is reused (``verify``: and deserializes);
    anything else is rebuilt (``force`` always rebuilds). ``trt``/``environment`` replace the tensorrt module
    and the GPU/TensorRT-version probe (tests).
    """
    log = log or (lambda message: None)
    onnx_path = Path(onnx_path)
    info = read_metadata(onnx_path)  # EngineError for a missing or foreign file
    trt = trt if trt is not None else require_tensorrt()
    env = environment if environment is not None else detect_environment(trt, device)
    plan = plan_build(onnx_path, info, tensorrt_version=env.tensorrt_version, gpu=env.gpu, profiles=profiles,
                      precision=precision, opt_level=opt_level, workspace_gib=workspace_gib, tf32=tf32)
    onnx_sha, onnx_files = hash_onnx(onnx_path)
    key = plan.key(onnx_sha, env.gpu)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    engine_path = Path(out) if out is not None else cached_engine_path(cache_root, onnx_path, key)
    if engine_path.suffix == ".onnx" or engine_path.resolve() == onnx_path.resolve():
        raise ConfigError(f"-o {engine_path}: name the engine file (e.g. {onnx_path.with_suffix('.plan').name}), "
                          "not an ONNX model")
    timing_path = None if timing_cache is False else (
        timing_cache_path(cache_root, env.gpu, env.tensorrt_version) if timing_cache in (None, True)
        else Path(timing_cache))

    status = CacheStatus(False, "forced rebuild (--force)") if force else cache_status(engine_path, key)
    if status.hit and verify and deserialize_plan(trt, engine_path.read_bytes()) is None:
        status = CacheStatus(False, "stale engine: TensorRT could not deserialize the cached plan")
    if status.hit:
        log(f"{engine_path}: {status.reason}; build skipped")
        return EngineRecord(engine_path, sidecar_path(engine_path), key, plan, True, status.reason, None, timing_path)

    log(f"building {engine_path.name}: TensorRT {env.tensorrt_version}, {env.gpu.name}, {plan.precision} "
        f"({', '.join(plan.flags) or 'no flags'}), opt level {opt_level}, "
        f"{len(plan.profiles)} profile(s) [{'; '.join(p.describe() for p in plan.profiles)}] — {status.reason}")
    timing_blob = None
    if timing_path is not None:
        timing_blob = timing_path.read_bytes() if timing_path.is_file() else b""
    start = time.perf_counter()
    blob, timing_out = _trt_build(plan, trt, timing_blob, log)
    seconds = time.perf_counter() - start
    sidecar = make_sidecar(key, plan_sha256=hashlib.sha256(blob).hexdigest(), plan_bytes=len(blob),
                           onnx_path=onnx_path, onnx_files=onnx_files, onnx_metadata=_ddpg_props(info),
                           inputs=list(info.inputs),
                           gpu=env.gpu, build_seconds=seconds,
                           built_at=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                           versions=_versions(trt), timing_cache=str(timing_path) if timing_path else None)
    write_engine(engine_path, blob, sidecar)
    if timing_path is not None and timing_out:
        atomic_write(timing_path, lambda tmp: tmp.write_bytes(timing_out))
    log(f"built {engine_path} in {seconds:.1f} s")
    return EngineRecord(engine_path, sidecar_path(engine_path), key, plan, False, status.reason, round(seconds, 3),
                        timing_path)


def engine_plan(engine: str | Path, *, cache_dir: str | Path | None = None, device=None,
                log: Callable[[str], None] | None = None) -> Path:
    """The TensorRT plan to load for ``engine``: a ``.plan`` as it is, an ``.onnx`` export built (or reused)
    through the engine cache in ``cache_dir`` for ``device``."""
    path = Path(engine)
    if path.suffix != ".onnx":
        return path
    return build_engine(path, cache_dir=cache_dir, device=device, log=log).path
