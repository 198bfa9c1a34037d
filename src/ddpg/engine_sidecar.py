"""What a ddpg TensorRT plan was built from and for: its shape profiles, the :class:`EngineKey`, the GPU, and
the JSON sidecar (``<engine>.json``) that vouches for the plan.

Pure Python (no TensorRT, no GPU), below both ``runtime`` (which loads a plan and checks its sidecar) and
``export`` (which builds plans and writes sidecars: ``ddpg.export.engine_cache``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ddpg.engine_metadata import EngineError
from ddpg.errors import ConfigError, InputError
from ddpg.io import read_json

SIDECAR_FORMAT = "ddpg-tensorrt-engine/1"
KEY_VERSION = 1

Shape = tuple[int, ...]


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



def sidecar_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")



def read_sidecar(engine_path: str | Path) -> dict:
    """The sidecar of ``engine_path``; EngineError when missing, unreadable or of another format."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineError(f"{engine_path}: no sidecar {path.name} next to the engine; it was not built by "
                          "ddpg (or the sidecar was removed) — rebuild with `ddpg export --format tensorrt`")
    try:
        data = read_json(path)
    except InputError as exc:
        raise EngineError(f"unreadable engine sidecar: {exc}") from exc
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

