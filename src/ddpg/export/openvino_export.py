"""Export a prior to OpenVINO IR (``ddpg export --format openvino --precision fp32|bf16|int8``).

The prior is exported to ONNX in float32 (``export_module``), converted with ``openvino.convert_model`` and saved
uncompressed (``compress_to_fp16=False``) as ``OUT.xml`` + ``OUT.bin`` with the ONNX export's ``ddpg.*`` metadata
in the IR's ``<rt_info><ddpg>`` (precision set to the IR's). fp32 and bf16 IRs hold the same float32 graph:
bf16 is the CPU plugin's inference precision, which the runtime sets from the metadata. int8 is NNCF
post-training quantization calibrated on (x_t, t) pairs recorded from real restorations (``calibration``).
Each IR is validated against the float32 PyTorch prior on ε (``DEFAULT_RTOL``), and bf16/int8 IRs can be gated
on restorations (``gate_faces``: :mod:`ddpg.export.quality_gate`); the gate's result is written into the
metadata (``ddpg.quality_gate``) and the sidecar. Files appear only when complete (temporary folder, then
renames: weights, sidecar, model last); a failed ε validation writes nothing, a failed gate is written with its
failure recorded (the backend warns whenever it loads such an IR).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ddpg.engine_metadata import IR_SECTION, PREFIX, BatchProfile
from ddpg.errors import ConfigError
from ddpg.models import as_denoiser
from ddpg.runtime.backends.openvino import OpenVINODenoiser, compile_ir, openvino_module
from ddpg.schedule import Schedule
from ddpg.versions import install_hint, missing_modules

from .defaults import DEFAULT_BATCH, DEFAULT_OPSET
from .onnx_export import ExportError, ExportResult, _decode, export_module, is_conditional, load_for_export, sha256_of
from .quality_gate import GATE_STEPS, GateReport, load_faces, quality_gate
from .validate import validate_runner

OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")
# relative L2 of ε against the float32 PyTorch prior (worst timestep); bf16 and int8 are measured on face64
DEFAULT_RTOL = {"fp32": 1e-5, "bf16": 1e-2, "int8": 1e-1}


@dataclass
class OpenVINOExport:
    """An OpenVINO export's settings (``ddpg export --format openvino``)."""

    precision: str = "fp32"
    calibration: Path | None = None  # int8: folder of clean images restored to record calibration pairs
    gate_faces: Path | None = None  # folder of clean faces for the restoration quality gate (None: no gate)
    gate_limit: int | None = None  # the first N faces of gate_faces
    gate_steps: int = GATE_STEPS
    calibration_steps: int | None = None  # default ddpg.export.calibration.CALIBRATION_STEPS

    def check(self, out: Path) -> None:
        if self.precision not in OPENVINO_PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r}: an OpenVINO export is one of "
                              f"{', '.join(OPENVINO_PRECISIONS)}")
        if out.suffix != ".xml":
            raise ConfigError(f"-o {out}: an OpenVINO IR is written as NAME.xml (with NAME.bin beside it)")
        if self.precision == "int8" and self.calibration is None:
            raise ConfigError("--precision int8 needs --calibration DIR (clean images; ddpg restores them to record "
                              "the (x_t, t) pairs NNCF calibrates on)")
        if self.precision != "int8" and self.calibration is not None:
            raise ConfigError(f"--calibration applies to --precision int8, not {self.precision}")
        for name in ("calibration", "gate_faces"):
            folder = getattr(self, name)
            if folder is not None and not Path(folder).is_dir():
                raise ConfigError(f"--{name.replace('_', '-')} {folder}: not a folder")


def require_openvino_packages(precision: str) -> None:
    """Refuse an OpenVINO export, before any work, when a package it needs is missing, naming the extra."""
    missing = missing_modules(("openvino", "onnx", "onnxscript") + ("nncf",) * (precision == "int8"))
    if missing:
        raise ConfigError(f"--format openvino needs {', '.join(missing)}: {install_hint('openvino')}")


def export_openvino(prior=None, *, out: str | Path, settings: OpenVINOExport, checkpoint=None,
                    batch: BatchProfile | str = DEFAULT_BATCH, size: tuple[int, int] | None = None,
                    opset: int = DEFAULT_OPSET, random_weights: bool = False, validate: bool = True,
                    rtol: float | None = None, atol: float | None = None, optimize: bool = True,
                    log: Callable[[str], None] | None = None) -> ExportResult:
    """Export ``prior`` (as :func:`~ddpg.export.onnx_export.export_prior`) to an OpenVINO IR at ``out`` (.xml);
    ``result.gate`` holds the quality gate's report when ``settings.gate_faces`` is given. ``optimize=False``
    skips onnxscript's rewriting of the intermediate ONNX graph (faster; OpenVINO fuses the graph itself)."""
    log = log or (lambda message: None)
    out = Path(out)
    settings.check(out)
    require_openvino_packages(settings.precision)
    reference, ckpt_name, ckpt_sha = load_for_export(prior, checkpoint, random_weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        start = time.perf_counter()
        onnx = export_module(reference, tmpdir / "model.onnx", size=size, batch=batch, opset=opset,
                             checkpoint=ckpt_name, checkpoint_sha256=ckpt_sha, validate=False, optimize=optimize,
                             log=log)
        meta = dict(onnx.metadata) | {PREFIX + "precision": settings.precision,
                                      PREFIX + "versions": json.dumps(_versions(settings.precision), sort_keys=True)}
        tmp_xml = tmpdir / out.name
        model = openvino_module().convert_model(str(onnx.path))
        if settings.precision == "int8":
            model = _quantize(model, tmpdir, meta, settings, log)
        save_ir(model, tmp_xml, meta)
        seconds = round(time.perf_counter() - start, 3)
        log(f"converted to OpenVINO IR ({settings.precision}) in {seconds:.1f} s")
        report = _validate(tmp_xml, reference, settings.precision, meta, rtol, atol, log) if validate else None
        gate = _gate(tmp_xml, reference, settings, log) if settings.gate_faces is not None else None
        if gate is not None:  # a copy with the gate's result: OpenVINO maps the .bin it read, never overwrite it
            meta[PREFIX + "quality_gate"] = json.dumps(gate.to_dict(), sort_keys=True)
            (tmpdir / "gated").mkdir()
            save_ir(openvino_module().Core().read_model(str(tmp_xml)), tmpdir / "gated" / out.name, meta)
            tmp_xml = tmpdir / "gated" / out.name
        sidecar = _publish_ir(tmp_xml, out, meta, seconds, report, gate)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return ExportResult(out, sidecar, out.with_suffix(".bin"), meta, report, seconds, gate=gate)


def ir_from_onnx(onnx_path: str | Path, out: str | Path, precision: str = "fp32",
                 sidecar_extra: dict | None = None) -> Path:
    """An fp32 or bf16 IR at ``out`` (.xml) converted from a float32 ``ddpg export`` ONNX model, its metadata
    carried over (precision set to the IR's); no validation (the conversion is exact). Written atomically with a
    sidecar (plus ``sidecar_extra``); returns ``out``. What the IR cache (ddpg.export.openvino_cache) builds for
    ``--backend openvino --engine model.onnx``."""
    from ddpg.engine_metadata import read_metadata

    out = Path(out)
    OpenVINOExport(precision=precision).check(out)
    if precision == "int8":
        raise ConfigError("an int8 IR needs calibration: ddpg export --format openvino --precision int8 --calibration")
    info = read_metadata(onnx_path)
    if info.precision != "fp32":
        raise ConfigError(f"{onnx_path}: a {info.precision} ONNX export; convert the float32 one to OpenVINO")
    versions = info.versions | {"openvino": openvino_module().__version__}
    meta = {k: v for k, v in info.raw.items() if k.startswith(PREFIX)} | {
        PREFIX + "precision": precision, PREFIX + "versions": json.dumps(versions, sort_keys=True)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        start = time.perf_counter()
        save_ir(openvino_module().convert_model(str(onnx_path)), tmpdir / out.name, meta)
        _publish_ir(tmpdir / out.name, out, meta, round(time.perf_counter() - start, 3), None, None, sidecar_extra)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return out


def record_gate(xml: str | Path, gate: GateReport) -> None:
    """Write a quality gate's result into an existing IR's metadata and sidecar (the gate may run apart from the
    export, e.g. one float32 reference shared by several candidates); the IR is rewritten beside itself and
    renamed into place."""
    from ddpg.engine_metadata import read_metadata
    from ddpg.io import read_json

    xml = Path(xml)
    info = read_metadata(xml)
    if info.precision != gate.precision:
        raise ConfigError(f"{xml}: a {info.precision} IR; this gate measured {gate.precision}")
    meta = {k: v for k, v in info.raw.items()} | {PREFIX + "quality_gate": json.dumps(gate.to_dict(), sort_keys=True)}
    old = read_json(xml.with_name(xml.name + ".json"))
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{xml.name}.", dir=xml.parent))
    try:
        save_ir(openvino_module().Core().read_model(str(xml)), tmpdir / xml.name, meta)
        _publish_ir(tmpdir / xml.name, xml, meta, old.get("export_seconds", 0.0), None, gate,
                    {"validation": old.get("validation"), **({"key": old["key"]} if "key" in old else {})})
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _versions(precision: str) -> dict:
    from ddpg.versions import versions

    return versions(libraries=("onnx", "onnxscript", "openvino") + ("nncf",) * (precision == "int8"))


def save_ir(model, path: Path, meta: dict[str, str]) -> None:
    """Save an OpenVINO model at ``path`` (.xml + .bin) in float32 with ``meta`` (``ddpg.*`` keys) as its
    ``<rt_info><ddpg>`` entries."""
    ov = openvino_module()
    for key, value in meta.items():
        model.set_rt_info(value, [IR_SECTION, key[len(PREFIX):]])
    ov.save_model(model, str(path), compress_to_fp16=False)


def _validate(xml: Path, reference, precision: str, meta: dict[str, str], rtol, atol, log):
    compiled = compile_ir(xml, precision)
    request = compiled.create_infer_request()
    batch = BatchProfile(*json.loads(meta[PREFIX + "batch"]))
    config = json.loads(meta[PREFIX + "config"])
    report = validate_runner(lambda feeds: request.infer(feeds)[compiled.output("eps")].copy(), reference,
                             precision=precision, batches=sorted({batch.min, batch.max}),
                             size=tuple(json.loads(meta[PREFIX + "size"])), schedule=Schedule.from_config(config),
                             num_classes=reference.num_classes if is_conditional(reference) else None,
                             rtol=DEFAULT_RTOL[precision] if rtol is None else rtol, atol=atol)
    log(f"OpenVINO {precision} vs PyTorch fp32: {report.summary()}")
    if not report.passed:
        raise ExportError(f"{xml.name}: the OpenVINO IR failed validation, nothing written: {report.summary()}",
                          report)
    return report


def _gate(xml: Path, reference, settings: OpenVINOExport, log) -> GateReport:
    faces = load_faces(settings.gate_faces, settings.gate_limit)
    log(f"quality gate: {len(faces)} faces × {settings.gate_steps} steps, fp32 PyTorch vs the {settings.precision} IR")
    report = quality_gate(OpenVINODenoiser(xml, gate_warning=False), as_denoiser(reference), faces, settings.precision,
                          steps=settings.gate_steps, log=log)
    log(report.summary())
    return report


def int8_ignored_scope(model):
    """The layers an int8 IR keeps in float32: the first and last convolutions (the image in, ε out) and every
    MatMul (attention and the timestep embedding's linear layers). Measured on face64 (ε against PyTorch fp32,
    NNCF's MIXED preset, 100 calibration pairs): quantizing everything gave max |Δε| 1.83 and rel L2 4.8e-2; this
    scope 0.28 and 4.2e-2 (ignoring MatMul alone changed nothing)."""
    import nncf

    convs = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    return nncf.IgnoredScope(names=convs[:1] + convs[-1:], types=["MatMul"], validate=False)


def _quantize(model, tmpdir: Path, meta: dict[str, str], settings: OpenVINOExport, log):
    """``model`` quantized to int8 by NNCF (MIXED preset: symmetric weights, asymmetric activations, as SiLU
    outputs are), calibrated on pairs recorded from float32 restorations of ``settings.calibration``'s images (run
    on the float32 IR, saved to ``tmpdir`` for it); :func:`int8_ignored_scope` stays float32."""
    import nncf

    from .calibration import CALIBRATION_STEPS, collect_calibration

    fp32_xml = tmpdir / "fp32.xml"
    save_ir(model, fp32_xml, meta | {PREFIX + "precision": "fp32"})
    start = time.perf_counter()
    items = collect_calibration(OpenVINODenoiser(fp32_xml), settings.calibration,
                                steps=settings.calibration_steps or CALIBRATION_STEPS)
    log(f"calibration: {len(items)} (x_t, t) pairs from restorations of {settings.calibration} "
        f"({time.perf_counter() - start:.1f} s)")
    quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items), preset=nncf.QuantizationPreset.MIXED,
                              ignored_scope=int8_ignored_scope(model))
    log(f"quantized to int8 with NNCF {nncf.__version__} ({time.perf_counter() - start:.1f} s in all)")
    return quantized


def _publish_ir(tmp_xml: Path, out: Path, meta: dict[str, str], seconds: float, report, gate,
                extra: dict | None = None) -> Path:
    """Move a finished IR into place: ``.bin`` first, the ``.xml.json`` sidecar next, the ``.xml`` last."""
    tmp_bin = tmp_xml.with_suffix(".bin")
    files = {"xml": {"name": out.name, "sha256": sha256_of(tmp_xml)},
             "bin": {"name": out.with_suffix(".bin").name, "sha256": sha256_of(tmp_bin)}}
    sidecar = {"metadata": {k: _decode(v) for k, v in meta.items()}, "files": files, "export_seconds": seconds,
               "validation": report.to_dict() if report is not None else None,
               "quality_gate": gate.to_dict() if gate is not None else None, **(extra or {})}
    tmp_sidecar = tmp_xml.with_name(out.name + ".json")
    tmp_sidecar.write_text(json.dumps(sidecar, indent=2))
    os.replace(tmp_bin, out.with_suffix(".bin"))
    sidecar_path = out.with_name(out.name + ".json")
    os.replace(tmp_sidecar, sidecar_path)
    os.replace(tmp_xml, out)
    return sidecar_path

