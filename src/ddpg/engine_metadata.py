"""What an exported prior says about itself: the ``ddpg.*`` ONNX metadata_props (in an OpenVINO IR: its
``<rt_info><ddpg>`` entries) and its sidecar JSON.

Every value is a string (ONNX metadata_props are string → string); structured values are JSON. Keys:

    ddpg.format        "1" — the version of this layout
    ddpg.prior         the prior name ("" for a custom config)
    ddpg.config        the prior config (JSON, includes ``kind`` and the schedule fields)
    ddpg.schedule      {beta_schedule, beta_start, beta_end, num_diffusion_timesteps} (JSON)
    ddpg.precision     fp32 | fp16 | bf16 (the UNet torso; I/O is always float32); an OpenVINO IR also int8
    ddpg.quality_gate  OpenVINO IR only: the restoration quality gate's result (JSON, ddpg.export.quality_gate)
    ddpg.opset         the ONNX opset
    ddpg.batch         [min, opt, max] (JSON); min == max for a fixed-batch export
    ddpg.size          [H, W] (JSON)
    ddpg.inputs        ["x", "t"] or ["x", "t", "y"] (JSON); output "eps"
    ddpg.checkpoint    file name of the source weights ("random" for --random-weights)
    ddpg.checkpoint_sha256   sha256 of that file ("random" for --random-weights)
    ddpg.versions      {ddpg, torch, onnx, onnxscript, python, platform} (JSON, ddpg.versions.versions)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from ddpg.errors import ConfigError, DdpgError
from ddpg.schedule import Schedule

PREFIX = "ddpg."
FORMAT_VERSION = "1"
IR_SECTION = PREFIX.rstrip(".")  # the <rt_info> element of an OpenVINO IR that holds the ddpg.* entries
SCHEDULE_KEYS = ("beta_schedule", "beta_start", "beta_end", "num_diffusion_timesteps")


class EngineError(DdpgError, ValueError):
    """An ONNX model or engine that is not a ddpg export, disagrees with the request, or gets wrong shapes."""


@dataclass(frozen=True)
class BatchProfile:
    """Batch sizes an export accepts: ``min`` ≤ B ≤ ``max``; ``opt`` is the size to tune for."""

    min: int
    opt: int
    max: int

    def __post_init__(self):
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(f"batch profile needs 1 <= MIN <= OPT <= MAX, got {self.min}:{self.opt}:{self.max}")

    @property
    def fixed(self) -> bool:
        return self.min == self.max

    @classmethod
    def parse(cls, text: str | int) -> BatchProfile:
        """``"N"`` (fixed batch N) or ``"MIN:OPT:MAX"`` (dynamic batch)."""
        parts = str(text).split(":")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) == 1:
            return cls(values[0], values[0], values[0])
        if len(values) == 3:
            return cls(*values)
        raise ConfigError(f"--batch: expected N or MIN:OPT:MAX (integers), got {text!r}")

    def __str__(self) -> str:
        return str(self.min) if self.fixed else f"{self.min}:{self.opt}:{self.max}"


def schedule_fields(config: dict) -> dict:
    """The schedule part of a prior config (defaults as in ``Schedule.from_config``)."""
    defaults = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_diffusion_timesteps": 1000}
    return {k: config.get(k, defaults[k]) for k in SCHEDULE_KEYS}


def build_metadata(config: dict, *, precision: str, opset: int, batch: BatchProfile, size: tuple[int, int],
                   conditional: bool, checkpoint: str, checkpoint_sha256: str, versions: dict) -> dict[str, str]:
    """The ``ddpg.*`` metadata_props of an export (all values strings)."""
    inputs = ["x", "t", "y"] if conditional else ["x", "t"]
    fields = {
        "format": FORMAT_VERSION,
        "prior": config.get("name") or "",
        "config": json.dumps(config, sort_keys=True, default=str),
        "schedule": json.dumps(schedule_fields(config), sort_keys=True),
        "precision": precision,
        "opset": str(opset),
        "batch": json.dumps([batch.min, batch.opt, batch.max]),
        "size": json.dumps(list(size)),
        "inputs": json.dumps(inputs),
        "checkpoint": checkpoint,
        "checkpoint_sha256": checkpoint_sha256,
        "versions": json.dumps(versions, sort_keys=True),
    }
    return {PREFIX + k: v for k, v in fields.items()}


@dataclass(frozen=True)
class EngineInfo:
    """The decoded ``ddpg.*`` metadata of an exported prior."""

    source: str
    prior: str | None
    config: dict
    schedule_config: dict
    precision: str
    opset: int
    batch: BatchProfile
    size: tuple[int, int]
    inputs: tuple[str, ...]
    checkpoint: str
    checkpoint_sha256: str
    versions: dict
    raw: dict

    @property
    def conditional(self) -> bool:
        return "y" in self.inputs

    @property
    def schedule(self) -> Schedule:
        return Schedule.from_config(self.schedule_config)

    @property
    def quality_gate(self) -> dict | None:
        """The restoration quality gate recorded by the export (``ddpg.quality_gate``; GateReport fields), None
        when none ran."""
        text = self.raw.get(PREFIX + "quality_gate")
        return json.loads(text) if text else None

    @classmethod
    def from_props(cls, props: dict[str, str], source: str | Path) -> EngineInfo:
        """Decode metadata_props; an ONNX file without them is not a ddpg export (EngineError)."""
        ours = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if not ours:
            raise EngineError(f"{source}: no ddpg metadata (ddpg.* metadata_props); this ONNX model was not "
                              "written by `ddpg export`, so its prior and schedule are unknown")
        missing = [k for k in ("format", "config", "schedule", "precision", "batch", "size", "inputs") if k not in ours]
        if missing:
            raise EngineError(f"{source}: incomplete ddpg metadata, missing {', '.join(PREFIX + k for k in missing)}")
        if ours["format"] != FORMAT_VERSION:
            raise EngineError(f"{source}: ddpg metadata format {ours['format']!r}, this ddpg reads {FORMAT_VERSION!r}")
        try:
            b = json.loads(ours["batch"])
            return cls(
                source=str(source), prior=ours.get("prior") or None, config=json.loads(ours["config"]),
                schedule_config=json.loads(ours["schedule"]), precision=ours["precision"],
                opset=int(ours.get("opset", 0)), batch=BatchProfile(*b), size=tuple(json.loads(ours["size"])),
                inputs=tuple(json.loads(ours["inputs"])), checkpoint=ours.get("checkpoint", ""),
                checkpoint_sha256=ours.get("checkpoint_sha256", ""),
                versions=json.loads(ours.get("versions", "{}")), raw=dict(props),
            )
        except (ValueError, TypeError) as exc:
            raise EngineError(f"{source}: unreadable ddpg metadata ({exc})") from exc

    def check_input(self, x_shape: tuple[int, ...]) -> None:
        """Refuse an x shape this export was not made for (before any runtime call)."""
        if len(x_shape) != 4 or x_shape[1] != 3:
            raise EngineError(f"{self.source}: x must be (B, 3, H, W), got {tuple(x_shape)}")
        b, _, h, w = x_shape
        if (h, w) != tuple(self.size):
            raise EngineError(f"{self.source}: exported for {self.size[0]}×{self.size[1]} images, got {h}×{w}; "
                              f"re-export with --size {h} {w}")
        if not self.batch.min <= b <= self.batch.max:
            allowed = f"batch {self.batch.min}" if self.batch.fixed else \
                f"batch {self.batch.min}..{self.batch.max}"
            raise EngineError(f"{self.source}: exported for {allowed}, got batch {b}; re-export with --batch")


def read_metadata(path: str | Path) -> EngineInfo:
    """The ddpg metadata of an ONNX file or an OpenVINO IR ``.xml`` (weights are not loaded)."""
    path = Path(path)
    if path.suffix == ".xml":
        return EngineInfo.from_props(read_ir_props(path), path)
    import onnx

    if not path.is_file():
        raise EngineError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a file that is not ONNX
        raise EngineError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    return EngineInfo.from_props({p.key: p.value for p in model.metadata_props}, path)


def read_ir_props(path: str | Path) -> dict[str, str]:
    """The ``ddpg.*`` entries of an OpenVINO IR's ``<rt_info><ddpg>`` section (``ddpg export --format openvino``
    writes them there, one ``<KEY value="..."/>`` element per key without the prefix), read from the XML alone."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"{path}: OpenVINO IR file not found")
    props: dict[str, str] = {}
    try:
        for _, element in ElementTree.iterparse(path, events=("end",)):
            if element.tag == IR_SECTION and not props:
                props = {PREFIX + child.tag: child.get("value", "") for child in element}
            elif element.tag == "layers":
                element.clear()  # the graph's layers are not needed
    except ElementTree.ParseError as exc:
        raise EngineError(f"{path}: not a readable OpenVINO IR ({exc})") from exc
    return props


def check_engine_matches(metadata: EngineInfo | dict, prior_name: str | None,
                         schedule: Schedule | dict | None = None) -> None:
    """Raise EngineError when an exported prior is not the one requested (by name) or uses another
    diffusion schedule. ``metadata``: an EngineInfo or raw metadata_props; ``schedule``: a Schedule or a
    config dict with the schedule fields; None skips that check."""
    info = metadata if isinstance(metadata, EngineInfo) else EngineInfo.from_props(metadata, "engine")
    if prior_name is not None and info.prior != prior_name:
        held = repr(info.prior) if info.prior else "a custom (unnamed) prior"
        raise EngineError(f"{info.source}: the engine holds {held} but the preset needs prior {prior_name!r}; "
                          f"export {prior_name} with `ddpg export --prior {prior_name}`")
    if schedule is not None:
        wanted = schedule if isinstance(schedule, Schedule) else Schedule.from_config(schedule)
        held_s = info.schedule
        if held_s.num_timesteps != wanted.num_timesteps or not np.allclose(held_s.betas, wanted.betas,
                                                                            rtol=1e-6, atol=1e-12):
            raise EngineError(f"{info.source}: the engine's diffusion schedule {info.schedule_config} differs "
                              f"from the requested one ({wanted.to_dict()})")
