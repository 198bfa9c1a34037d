"""The TensorRT engine cache: what an engine was built from and for, and whether a plan on disk may be reused.

Pure Python (no TensorRT, no GPU): shape profiles and their command-line parsers, the :class:`EngineKey`
(deployment.md §9: sha256 of the ONNX file and every external-data file, TensorRT version, GPU name and compute
capability, precision, profile shapes, builder optimization level, workspace limit and build flags), the JSON
sidecar written next to each plan (``<engine>.json``), and :func:`cache_status`, which says "hit" only when the
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
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ddpg.errors import ConfigError

from .onnx_metadata import BatchProfile, EngineError, EngineInfo

SIDECAR_FORMAT = "ddpg-tensorrt-engine/1"
KEY_VERSION = 1

Shape = tuple[int, ...]


# ---------------------------------------------------------------------------------------------------------
# Shape profiles


@dataclass(frozen=True)
class ShapeProfile:
    """One TensorRT optimization profile: ``(name, min, opt, max)`` shapes per network input (kept sorted by
    name, so equal profiles compare equal whatever order they were given in)."""

    shapes: tuple[tuple[str, Shape, Shape, Shape], ...]

    def __post_init__(self):
        object.__setattr__(self, "shapes", tuple(sorted(self.shapes)))
        if not self.shapes:
            raise ConfigError("an optimization profile needs at least one input shape")
        for name, lo, opt, hi in self.shapes:
            if not len(lo) == len(opt) == len(hi):
                raise ConfigError(f"profile input {name!r}: min/opt/max shapes {lo}/{opt}/{hi} differ in rank")
            if any(d < 1 for d in lo) or not all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)):
                raise ConfigError(f"profile input {name!r}: needs 1 <= min <= opt <= max per dimension, got "
                                  f"min {lo}, opt {opt}, max {hi}")

    @classmethod
    def from_mapping(cls, shapes: dict) -> ShapeProfile:
        """``{"x": ((1,3,H,W), (4,3,H,W), (8,3,H,W)), "t": ((1,), (4,), (8,))}`` (as ``ddpg export`` passes)."""
        try:
            rows = tuple((str(name), *(tuple(int(d) for d in s) for s in triple)) for name, triple in shapes.items())
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"profile {shapes!r}: expected name -> (min, opt, max) shapes ({exc})") from exc
        if any(len(row) != 4 for row in rows):
            raise ConfigError(f"profile {shapes!r}: each input needs exactly three shapes (min, opt, max)")
        return cls(rows)

    def to_dict(self) -> dict[str, list[list[int]]]:
        return {name: [list(lo), list(opt), list(hi)] for name, lo, opt, hi in self.shapes}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(row[0] for row in self.shapes)

    def get(self, name: str) -> tuple[Shape, Shape, Shape]:
        for row in self.shapes:
            if row[0] == name:
                return row[1], row[2], row[3]
        raise KeyError(name)

    @property
    def fixed(self) -> bool:
        """True when every input has one shape (min == max): the engine call can go into a CUDA graph."""
        return all(lo == hi for _, lo, _, hi in self.shapes)

    def accepts(self, shapes: dict[str, Shape]) -> bool:
        """Whether concrete input shapes lie inside this profile."""
        for name, lo, _, hi in self.shapes:
            shape = tuple(shapes.get(name, ()))
            if len(shape) != len(lo) or not all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
                return False
        return True

    def describe(self) -> str:
        """``x: batch 1..8, 3×64×64`` style text for error messages."""
        name = "x" if "x" in self.names else self.names[0]
        lo, _, hi = self.get(name)
        batch = str(lo[0]) if lo[0] == hi[0] else f"{lo[0]}..{hi[0]}"
        rest = "×".join(str(d) if d == e else f"{d}..{e}" for d, e in zip(lo[1:], hi[1:], strict=True))
        return f"{name}: batch {batch}" + (f", {rest}" if rest else "")


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


@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for. ``driver`` is recorded, not part of the key."""

    name: str
    compute_capability: str
    driver: str | None = None

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") + f"-sm{self.compute_capability}"


@dataclass(frozen=True)
class EngineKey:
    """Everything a TensorRT plan depends on; two builds with equal keys are interchangeable."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: tuple[ShapeProfile, ...]
    opt_level: int
    workspace_bytes: int
    flags: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {"key_version": KEY_VERSION, "onnx_sha256": self.onnx_sha256,
                "tensorrt_version": self.tensorrt_version, "gpu_name": self.gpu_name,
                "compute_capability": self.compute_capability, "precision": self.precision,
                "profiles": [p.to_dict() for p in self.profiles], "opt_level": self.opt_level,
                "workspace_bytes": self.workspace_bytes, "flags": sorted(self.flags)}

    @classmethod
    def from_dict(cls, data: dict) -> EngineKey:
        if data.get("key_version") != KEY_VERSION:
            raise ValueError(f"key_version {data.get('key_version')!r}, expected {KEY_VERSION}")
        return cls(onnx_sha256=data["onnx_sha256"], tensorrt_version=data["tensorrt_version"],
                   gpu_name=data["gpu_name"], compute_capability=data["compute_capability"],
                   precision=data["precision"],
                   profiles=tuple(ShapeProfile.from_mapping(p) for p in data["profiles"]),
                   opt_level=int(data["opt_level"]), workspace_bytes=int(data["workspace_bytes"]),
                   flags=tuple(sorted(data.get("flags", ()))))

    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON of the key."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def differences(self, other: EngineKey) -> list[str]:
        """``field: theirs → ours`` for each field where ``other`` (e.g. a cached engine's key) differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: {_short(theirs.get(k))} → {_short(mine[k])}" for k in mine if theirs.get(k) != mine[k]]


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


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
    from ddpg.models.checkpoints import sha256_file

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


def sidecar_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


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


def read_sidecar(engine_path: str | Path) -> dict:
    """The sidecar of ``engine_path``; EngineError when missing, unreadable or of another format."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineError(f"{engine_path}: no sidecar {path.name} next to the engine; it was not built by "
                          "ddpg (or the sidecar was removed) — rebuild with `ddpg export --format tensorrt`")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EngineError(f"{path}: unreadable engine sidecar ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise EngineError(f"{path}: sidecar format {found!r}, this ddpg reads {SIDECAR_FORMAT!r}")
    for required in ("key", "plan", "onnx_metadata"):
        if required not in data:
            raise EngineError(f"{path}: sidecar lacks {required!r}")
    return data


def sidecar_key(data: dict, source: str | Path) -> EngineKey:
    try:
        return EngineKey.from_dict(data["key"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise EngineError(f"{source}: unreadable engine key in the sidecar ({exc})") from exc


@dataclass(frozen=True)
class CacheStatus:
    """``hit``: the plan may be used as it is; otherwise ``reason`` says why it must be (re)built."""

    hit: bool
    reason: str


def cache_status(engine_path: str | Path, key: EngineKey) -> CacheStatus:
    """Whether the plan at ``engine_path`` was built for exactly ``key`` and is intact (sha256)."""
    from ddpg.models.checkpoints import sha256_file

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


def check_engine_environment(data: dict, engine_path: str | Path, tensorrt_version: str, gpu: GpuInfo) -> None:
    """Refuse (EngineError) a plan built with another TensorRT version or for another GPU."""
    key = sidecar_key(data, engine_path)
    problems = []
    if key.tensorrt_version != tensorrt_version:
        problems.append(f"TensorRT {key.tensorrt_version} (this machine has {tensorrt_version})")
    if (key.gpu_name, key.compute_capability) != (gpu.name, gpu.compute_capability):
        problems.append(f"GPU {key.gpu_name} sm{key.compute_capability} (this is {gpu.name} "
                        f"sm{gpu.compute_capability})")
    if problems:
        raise EngineError(f"{engine_path}: built for " + " and ".join(problems) + "; TensorRT engines are not "
                          "portable — rebuild it here from the ONNX model (`ddpg export --format tensorrt`)")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file in ``path``'s folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_engine(engine_path: str | Path, plan: bytes, sidecar: dict) -> None:
    """Store a plan and its sidecar. The old sidecar goes first, the plan next, the new sidecar last, so an
    interrupted write never leaves a sidecar that vouches for a plan it does not describe."""
    engine_path = Path(engine_path)
    side = sidecar_path(engine_path)
    side.unlink(missing_ok=True)
    atomic_write(engine_path, plan)
    atomic_write(side, (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode())
