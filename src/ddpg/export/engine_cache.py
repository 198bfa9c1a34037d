"""The TensorRT engine cache: what an engine was built from and for, and whether a plan on disk may be reused.

Pure Python (no TensorRT, no GPU): the command-line parsers of shape profiles, the hashes and paths that go
into an :class:`~ddpg.engine_sidecar.EngineKey` (docs/deployment.md §8: sha256 of the ONNX file and every external-data
file, TensorRT version, GPU name and compute capability, precision, profile shapes, builder optimization level,
workspace limit and build flags; the key, the profiles and the sidecar reader live in ``ddpg.engine_sidecar``,
which the runtime reads too), the JSON sidecar written next to each plan (``<engine>.json``), and
:func:`cache_status`, which says "hit" only when the
sidecar is readable, its key equals the requested key and the plan's sha256 equals the one recorded at build
time. Engines are not portable across TensorRT versions or GPU architectures, so both are part of the key
(https://docs.nvidia.com/deeplearning/tensorrt/11.1.0/inference-library/engine-compatibility.html ,
https://docs.nvidia.com/deeplearning/tensorrt/10.16.1/getting-started/support-matrix.html , "Engine Portability").

Timing caches (one per GPU model and TensorRT version, never shared across GPU targets: their entries are specific
to the device, CUDA and TensorRT version,
https://docs.nvidia.com/deeplearning/tensorrt/10.16.1/performance/builder-performance.html ) live under
``<cache_dir>/timing/`` (:func:`timing_cache_path`). No TensorRT call is made in this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ddpg.engine_metadata import BatchProfile, EngineError, EngineInfo
from ddpg.engine_sidecar import (
    SIDECAR_FORMAT,
    EngineKey,
    GpuInfo,
    ShapeProfile,
    read_sidecar,
    sidecar_key,
    sidecar_path,
)
from ddpg.errors import ConfigError
from ddpg.io import atomic_write
from ddpg.models.checkpoints import sha256_file

# ---------------------------------------------------------------------------------------------------------
# Shape profiles


def parse_size(text: str | int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``--size``: ``"64"`` (square), ``"64x48"``, ``"64,48"`` or ``"64 48"`` (H then W), or a pair."""
    if isinstance(text, int):
        values = [text]
    elif isinstance(text, (tuple, list)):
        values = list(text)
    else:
        match = re.fullmatch(r"\s*(\d+)\s*(?:[x×, ]\s*(\d+)\s*)?", str(text).lower())
        values = [int(g) for g in match.groups() if g is not None] if match else []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(isinstance(v, int) and v > 0 for v in values):
        raise ConfigError(f"--size {text!r}: expected H or HxW with positive integers (e.g. 256 or 256x256)")
    return int(values[0]), int(values[1])


def parse_batches(text: str | list[str] | tuple[str, ...]) -> list[BatchProfile]:
    """``--batch``: one or more of ``N`` (fixed) / ``MIN:OPT:MAX``, comma-separated or as a list; one TensorRT
    optimization profile each (e.g. ``"1,2:4:8"`` → a fixed batch-1 profile and a 2..8 profile)."""
    items = [text] if isinstance(text, str) else list(text)
    parts = [p.strip() for item in items for p in str(item).split(",")]
    if not parts or any(not p for p in parts):
        raise ConfigError(f"--batch {text!r}: expected N or MIN:OPT:MAX, comma-separated for several profiles")
    profiles = []
    for part in parts:
        try:
            profiles.append(BatchProfile.parse(part))
        except ConfigError as exc:
            raise ConfigError(f"--batch {text!r}: item {part!r}: {exc}") from exc
    if len(set(profiles)) != len(profiles):
        raise ConfigError(f"--batch {text!r}: the same profile is given twice")
    return profiles


def profiles_for(info: EngineInfo, batches: list[BatchProfile] | None = None,
                 size: tuple[int, int] | None = None) -> list[ShapeProfile]:
    """Optimization profiles for an exported prior: one per batch range (default: the export's own range),
    for its inputs ``x`` (B,3,H,W), ``t`` (B,) and ``y`` (B,). Batch ranges must lie inside the export's and
    ``size`` must be the exported size (ddpg exports have a fixed H×W)."""
    h, w = (int(d) for d in info.size)
    if size is not None and tuple(size) != (h, w):
        raise ConfigError(f"--size {size[0]}x{size[1]}: {info.source} was exported for {h}x{w} images; re-export "
                          f"the ONNX model with `ddpg export --size {size[0]} {size[1]}`")
    profiles = []
    for b in batches or [info.batch]:
        if b.min < info.batch.min or b.max > info.batch.max:
            raise ConfigError(f"--batch {b}: {info.source} accepts batch {info.batch.min}..{info.batch.max} only "
                              f"(exported with --batch {info.batch}); re-export with a wider --batch")
        rows = []
        for name in info.inputs:
            shape = (lambda n: (n, 3, h, w)) if name == "x" else (lambda n: (n,))
            rows.append((name, shape(b.min), shape(b.opt), shape(b.max)))
        profiles.append(ShapeProfile(tuple(rows)))
    return profiles


def as_profiles(profiles) -> list[ShapeProfile]:
    """Normalise ``profiles``: a ShapeProfile, a name → (min, opt, max) mapping, or a list of either."""
    if isinstance(profiles, (ShapeProfile, dict)):
        profiles = [profiles]
    out = [p if isinstance(p, ShapeProfile) else ShapeProfile.from_mapping(p) for p in profiles]
    if not out:
        raise ConfigError("give at least one optimization profile")
    return out


def check_profiles(profiles: list[ShapeProfile], info: EngineInfo) -> None:
    """Refuse profiles that name other inputs than the export's or leave its batch range / image size."""
    for p in profiles:
        if set(p.names) != set(info.inputs):
            raise ConfigError(f"profile inputs {sorted(p.names)} do not match the ONNX inputs {list(info.inputs)} "
                              f"of {info.source}")
        lo, _, hi = p.get("x")
        if len(lo) != 4 or lo[1:] != hi[1:] or tuple(lo[2:]) != tuple(info.size) or lo[1] != 3:
            raise ConfigError(f"profile x {lo}..{hi}: {info.source} takes x of shape (B, 3, {info.size[0]}, "
                              f"{info.size[1]})")
        if lo[0] < info.batch.min or hi[0] > info.batch.max:
            raise ConfigError(f"profile batch {lo[0]}..{hi[0]}: {info.source} accepts batch "
                              f"{info.batch.min}..{info.batch.max} only")
        for name in p.names:
            if name != "x" and (p.get(name)[0][0], p.get(name)[2][0]) != (lo[0], hi[0]):
                raise ConfigError(f"profile input {name!r}: its batch range must equal x's ({lo[0]}..{hi[0]})")


# ---------------------------------------------------------------------------------------------------------
# What an engine depends on


def external_data_files(onnx_path: str | Path) -> list[Path]:
    """The external-data files an ONNX model references (resolved next to the model), sorted and unique."""
    import onnx

    onnx_path = Path(onnx_path)
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends for a file that is not ONNX
        raise EngineError(f"{onnx_path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    locations = set()
    for tensor in _all_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            if "location" in entries:
                locations.add(entries["location"])
    files = []
    for location in sorted(locations):
        path = onnx_path.parent / location
        if not path.is_file():
            raise EngineError(f"{onnx_path}: external-data file {location!r} is missing (expected {path})")
        files.append(path)
    return files


def _all_tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def hash_onnx(onnx_path: str | Path) -> tuple[str, dict[str, str]]:
    """(combined sha256, {file name: sha256}) over the ONNX file and every external-data file it uses."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineError(f"{onnx_path}: ONNX file not found")
    model_sha = sha256_file(onnx_path)
    data = {str(path.relative_to(onnx_path.parent)): sha256_file(path) for path in external_data_files(onnx_path)}
    # the model file's own name does not matter; the data files' names are part of the model bytes anyway
    combined = hashlib.sha256(json.dumps([model_sha, sorted(data.items())]).encode()).hexdigest()
    return combined, {onnx_path.name: model_sha, **data}


def timing_cache_path(cache_dir: str | Path, gpu: GpuInfo, tensorrt_version: str) -> Path:
    """One persistent timing cache per GPU model and TensorRT version."""
    return Path(cache_dir) / "timing" / f"{gpu.slug}-trt{tensorrt_version}.cache"


def default_cache_dir() -> Path:
    """``$DDPG_CACHE/engines`` or the platform's user cache folder (``platformdirs``)."""
    root = os.environ.get("DDPG_CACHE")
    if root:
        return Path(root) / "engines"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ddpg")) / "engines"


def cached_engine_path(cache_dir: str | Path, onnx_path: str | Path, key: EngineKey) -> Path:
    """``<cache_dir>/<onnx stem>-<key digest[:16]>.plan``."""
    return Path(cache_dir) / f"{Path(onnx_path).stem}-{key.digest()[:16]}.plan"


# ---------------------------------------------------------------------------------------------------------
# Sidecar and cache lookup


def make_sidecar(key: EngineKey, *, plan_sha256: str, plan_bytes: int, onnx_path: str | Path,
                 onnx_files: dict[str, str], onnx_metadata: dict[str, str], inputs: list[str], gpu: GpuInfo,
                 build_seconds: float, built_at: str, versions: dict[str, str | None],
                 timing_cache: str | None) -> dict:
    """The JSON document stored beside a plan: the key (and its digest), the plan's sha256, the source ONNX
    (path, per-file sha256, ``ddpg.*`` metadata_props as strings), the I/O, GPU, build time and versions."""
    return {"format": SIDECAR_FORMAT, "key": key.to_dict(), "key_digest": key.digest(),
            "plan": {"sha256": plan_sha256, "bytes": plan_bytes},
            "onnx": {"path": str(Path(onnx_path).resolve()), "files": onnx_files},
            "onnx_metadata": dict(onnx_metadata), "io": {"inputs": list(inputs), "outputs": ["eps"]},
            "gpu": {"name": gpu.name, "compute_capability": gpu.compute_capability, "driver": gpu.driver},
            "build_seconds": round(float(build_seconds), 3), "built_at": built_at,
            "timing_cache": timing_cache, "versions": dict(versions)}


@dataclass(frozen=True)
class CacheStatus:
    """``hit``: the plan may be used as it is; otherwise ``reason`` says why it must be (re)built."""

    hit: bool
    reason: str


def cache_status(engine_path: str | Path, key: EngineKey) -> CacheStatus:
    """Whether the plan at ``engine_path`` was built for exactly ``key`` and is intact (sha256)."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        return CacheStatus(False, "no engine yet")
    try:
        data = read_sidecar(engine_path)
        cached = sidecar_key(data, engine_path)
    except EngineError as exc:
        return CacheStatus(False, f"stale engine: {exc}")
    if cached.digest() != key.digest():
        return CacheStatus(False, "stale engine: built for another configuration (" +
                           "; ".join(key.differences(cached)) + ")")
    if data["plan"].get("sha256") != sha256_file(engine_path):
        return CacheStatus(False, "stale engine: the plan file does not match the sha256 in its sidecar")
    return CacheStatus(True, "cached engine matches")


def write_engine(engine_path: str | Path, plan: bytes, sidecar: dict) -> None:
    """Store a plan and its sidecar. The old sidecar goes first, the plan next, the new sidecar last, so an
    interrupted write never leaves a sidecar that vouches for a plan it does not describe."""
    engine_path = Path(engine_path)
    side = sidecar_path(engine_path)
    side.unlink(missing_ok=True)
    atomic_write(engine_path, lambda tmp: tmp.write_bytes(plan))
    atomic_write(side, lambda tmp: tmp.write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n"))
