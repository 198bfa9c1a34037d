"""Export a prior's ε-network to ONNX (docs/deployment.md §2–4, §6, §7).

Graph contract: inputs ``x`` (B,3,H,W) float32, ``t`` (B,) float32 timestep values, ``y`` (B,) int64 for
class-conditional priors; output ``eps`` (B,3,H,W) float32 (learned-variance channels dropped in the graph).
The dynamo exporter traces the module with one shared batch dimension; opset 18–20. Files appear only when
complete: the model, its ``.onnx.data`` (models over 2 GB) and the ``.onnx.json`` sidecar are written in a
temporary folder beside the output, validated, then renamed into place. A failed validation leaves nothing.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ddpg.engine_metadata import BatchProfile, build_metadata
from ddpg.errors import CheckpointError, ConfigError, DdpgError
from ddpg.models import create_prior, load_prior, prior_config, read_state_dict, resolve_checkpoint
from ddpg.models.checkpoints import REGISTRY, guess_prior, sha256_file
from ddpg.precisions import PRECISIONS, parse_precision
from ddpg.schedule import Schedule
from ddpg.versions import install_hint, missing_modules, versions

from .defaults import DEFAULT_BATCH, DEFAULT_OPSET, OPSETS
from .validate import ValidationReport, validate_onnx

RANDOM = "random"


class ExportError(DdpgError):
    """The exporter failed, or the exported model failed its accuracy check (``report`` then says how)."""

    def __init__(self, message: str, report: ValidationReport | None = None):
        super().__init__(message)
        self.report = report


class EpsGraph(nn.Module):
    """(x, t) → eps: the prior's first three output channels, float32."""

    def __init__(self, prior: nn.Module):
        super().__init__()
        self.prior = prior

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.prior(x, t)[:, :3].float()


class ClassEpsGraph(EpsGraph):
    """(x, t, y) → eps for class-conditional priors."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.prior(x, t, y)[:, :3].float()


def is_conditional(prior: nn.Module) -> bool:
    return getattr(prior, "num_classes", None) is not None


@dataclass
class ExportResult:
    """Where an export went and how it checked. ``data_path`` is set for models stored with external data."""

    path: Path
    sidecar_path: Path
    data_path: Path | None
    metadata: dict[str, str]
    validation: ValidationReport | None
    export_seconds: float
    engine: object | None = field(default=None)  # the TensorRT EngineRecord for --format tensorrt
    gate: object | None = field(default=None)  # the quality gate's GateReport (--format openvino with a gate)


def check_opset_precision(opset: int, precision: str) -> None:
    if opset not in OPSETS:
        raise ConfigError(f"--opset {opset}: unsupported; ddpg exports opset {OPSETS[0]}–{OPSETS[-1]} (opset 21+ "
                          "emits native GroupNormalization, which TensorRT and ONNX Runtime CUDA mishandle)")
    parse_precision(precision, "--precision")


def check_validation_device(device: str) -> None:
    """``--device`` names where validation runs ONNX Runtime: cpu, cuda or cuda:N (checked before exporting)."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r}: validation runs ONNX Runtime on cpu, cuda or cuda:N")


def batch_profile(batch: BatchProfile | str, opt_batch: int | None = None) -> BatchProfile:
    """``--batch`` as a profile, with ``--opt-batch`` (the deployment batch, which TensorRT's builder tunes its
    tactics for) as its opt; ``opt_batch`` must lie in the batch range (equal N for a fixed batch N)."""
    profile = batch if isinstance(batch, BatchProfile) else BatchProfile.parse(batch)
    if opt_batch is None:
        return profile
    if not profile.min <= opt_batch <= profile.max:
        raise ConfigError(f"--opt-batch {opt_batch}: must lie in the --batch range {profile.min}..{profile.max}"
                          + (f" (a fixed batch {profile.min} takes only {profile.min})" if profile.fixed else ""))
    return BatchProfile(profile.min, int(opt_batch), profile.max)


def check_export_args(opset: int, precision: str, size: tuple[int, int], multiple: int) -> None:
    check_opset_precision(opset, precision)
    h, w = size
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        raise ConfigError(f"--size {h} {w}: height and width must be positive multiples of {multiple} for this prior")


def _example_inputs(prior: nn.Module, batch: BatchProfile, size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Example batch ≥ 2 for a dynamic batch (torch.export specialises sizes 0 and 1)."""
    n = batch.max if batch.fixed else min(max(2, batch.opt), batch.max)
    x = torch.randn(n, 3, *size)
    t = torch.linspace(0, 999, n)
    return (x, t, torch.zeros(n, dtype=torch.int64)) if is_conditional(prior) else (x, t)


def sha256_of(path: Path) -> str:
    return sha256_file(path)


def export_module(model: nn.Module, out: str | Path, *, size: tuple[int, int] | None = None,
                  batch: BatchProfile | str = DEFAULT_BATCH, opset: int = DEFAULT_OPSET, precision: str = "fp32",
                  reference: nn.Module | None = None, checkpoint: str = RANDOM, checkpoint_sha256: str = RANDOM,
                  validate: bool = True, rtol: float | None = None, atol: float | None = None,
                  device: str = "cpu", optimize: bool = True, log: Callable[[str], None] | None = None
                  ) -> ExportResult:
    """Export any ``model(x, t[, y]) -> (B, C≥3, H, W)`` with a prior ``.config`` (kind and schedule fields) to
    ``out``. ``model`` is exported as it is (already converted with ``to_dtype`` for fp16/bf16; ``precision``
    labels it); ``reference`` is the float32 prior it is validated against (default: ``model``).
    ``checkpoint``/``checkpoint_sha256`` name the weights' source. ``optimize=False`` skips onnxscript's graph
    rewriting (faster export, identical numbers; the default graph is the deployable one)."""
    log = log or (lambda message: None)
    out = Path(out)
    config = dict(getattr(model, "config", None) or {})
    if "kind" not in config:
        raise ConfigError("the model to export needs a prior .config with a 'kind' (see ddpg.models.create_prior)")
    size = tuple(size or (int(config.get("image_size", 0)),) * 2)
    check_export_args(opset, precision, size, int(getattr(model, "downsample_factor", 1)))
    if validate:
        check_validation_device(device)
    batch = batch if isinstance(batch, BatchProfile) else BatchProfile.parse(batch)
    conditional = is_conditional(model)
    meta = build_metadata(config, precision=precision, opset=opset, batch=batch, size=size,
                          conditional=conditional, checkpoint=checkpoint, checkpoint_sha256=checkpoint_sha256,
                          versions=versions(libraries=("onnx", "onnxscript")))
    graph = (ClassEpsGraph if conditional else EpsGraph)(model).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        start = time.perf_counter()
        log(f"exporting {config.get('name') or config['kind']} ({precision}, batch {batch}, {size[0]}×{size[1]}, "
            f"opset {opset})")
        tmp_model = tmpdir / out.name
        _save_onnx(graph, _example_inputs(model, batch, size), batch, opset, optimize, meta, tmp_model)
        export_seconds = time.perf_counter() - start
        _check_model(tmp_model)
        log(f"exported in {export_seconds:.1f} s")
        report = None
        if validate:
            batches = sorted({batch.min, batch.max})
            report = validate_onnx(tmp_model, reference if reference is not None else graph, precision=precision,
                                   batches=batches, size=size, schedule=_schedule(config),
                                   num_classes=model.num_classes if conditional else None, rtol=rtol, atol=atol,
                                   device=device)
            log(report.summary())
            if not report.passed:
                raise ExportError(f"{out}: exported model failed validation, nothing written: {report.summary()}",
                                  report)
        sidecar_path, data_path = _publish(tmp_model, out, meta, round(export_seconds, 3), report)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return ExportResult(out, sidecar_path, data_path, meta, report, round(export_seconds, 3))


def _save_onnx(graph: nn.Module, example: tuple[torch.Tensor, ...], batch: BatchProfile, opset: int,
               optimize: bool, meta: dict[str, str], path: Path) -> None:
    """Trace ``graph`` on ``example`` inputs (x (B,3,H,W), t (B,)[, y (B,)]) with torch.onnx's dynamo exporter
    (the batch dimension dynamic unless ``batch`` is fixed), attach ``meta`` and save to ``path``."""
    names = ["x", "t", "y"][: len(example)]
    dynamic = None
    if not batch.fixed:
        dim = torch.export.Dim("B", min=batch.min, max=batch.max)
        dynamic = {name: {0: dim} for name in names}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
        # torch.export copies its own pytree specs through a class it has deprecated (torch 2.13): not ours to fix
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning)
        try:
            program = torch.onnx.export(graph, example, dynamo=True, input_names=names, output_names=["eps"],
                                        dynamic_shapes=dynamic, opset_version=opset, optimize=optimize,
                                        verbose=False)
        except Exception as exc:  # torch.export / onnxscript raise many types
            raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    program.model.metadata_props.update(meta)
    program.save(path)


def _publish(tmp_model: Path, out: Path, meta: dict[str, str], export_seconds: float,
             report: ValidationReport | None) -> tuple[Path, Path | None]:
    """Move a finished export from its temporary folder to ``out`` (weights file first, sidecar next, the model
    last, so a complete model never sits beside a stale sidecar): (sidecar path, weights path or None)."""
    tmp_data = tmp_model.with_name(out.name + ".data")
    files = {"onnx": {"name": out.name, "sha256": sha256_of(tmp_model)}}
    if tmp_data.exists():
        files["data"] = {"name": tmp_data.name, "sha256": sha256_of(tmp_data)}
    sidecar = {"metadata": {k: _decode(v) for k, v in meta.items()}, "files": files,
               "export_seconds": export_seconds, "validation": report.to_dict() if report is not None else None}
    tmp_sidecar = tmp_model.with_name(out.name + ".json")
    tmp_sidecar.write_text(json.dumps(sidecar, indent=2))
    data_path = out.with_name(out.name + ".data")
    if tmp_data.exists():
        os.replace(tmp_data, data_path)  # the weights first: the model appears last, complete
    else:
        data_path.unlink(missing_ok=True)  # a stale weights file of an earlier large export
    sidecar_path = out.with_name(out.name + ".json")
    os.replace(tmp_sidecar, sidecar_path)
    os.replace(tmp_model, out)
    return sidecar_path, data_path if data_path.exists() else None


def _decode(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value


def _schedule(config: dict):
    return Schedule.from_config(config)


def _check_model(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))  # path-based: works with external data above 2 GB
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX model does not pass onnx.checker: {exc}") from exc


def random_prior(config: dict) -> nn.Module:
    """A default-initialised prior (seed 0) whose all-zero tensors (ADM zero-initialises its output
    convolutions) are drawn from N(0, 0.02²), so its output is not identically zero."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_prior(config)
        with torch.no_grad():
            for p in model.parameters():
                if not p.any():
                    p.normal_(0.0, 0.02)
    return model.eval()


def load_for_export(prior: str | Path | dict | None, checkpoint: str | Path | None,
                    random_weights: bool) -> tuple[nn.Module, str, str]:
    """(float32 prior, checkpoint file name, its sha256) — or "random" for both with ``random_weights``."""
    if prior is None and checkpoint is None:
        raise ConfigError("give --prior NAME|YAML or --checkpoint PATH")
    if random_weights and checkpoint is not None:
        raise ConfigError("--random-weights and --checkpoint exclude each other")
    if prior is None:
        state = read_state_dict(checkpoint)
        prior = guess_prior({k: tuple(v.shape) for k, v in state.items()})
        if prior is None:
            raise ConfigError(f"{checkpoint}: the weights match no known prior; give its architecture with --prior "
                              "YAML")
    config = prior_config(prior)
    if config["kind"] == "gaussian":
        raise ConfigError("the gaussian prior is analytic (FFTs, no network): there is nothing to export")
    if random_weights:
        return random_prior(config), RANDOM, RANDOM
    if checkpoint is None:
        if config.get("name") not in REGISTRY:
            raise CheckpointError("a prior given by config needs a checkpoint file (--checkpoint PATH)")
        checkpoint = resolve_checkpoint(config["name"])
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"--checkpoint {checkpoint}: checkpoint file not found")
    model = load_prior(config, checkpoint)
    return model, checkpoint.name, sha256_of(checkpoint)


def require_export_packages(validate: bool) -> None:
    """Refuse an export, before any work, when the packages of the ``onnx`` extra it needs are missing (onnx and
    onnxscript; ONNX Runtime too when it validates), naming the extra."""
    missing = missing_modules(("onnx", "onnxscript") + ("onnxruntime",) * validate)
    if missing:
        raise ConfigError(f"export needs {', '.join(missing)}: {install_hint('onnx')}")


def export_prior(prior: str | Path | dict | None = None, *, out: str | Path, checkpoint: str | Path | None = None,
                 format: str = "onnx", precision: str = "fp32", batch: BatchProfile | str = DEFAULT_BATCH,
                 size: tuple[int, int] | None = None, opset: int = DEFAULT_OPSET, random_weights: bool = False,
                 validate: bool = True, rtol: float | None = None, atol: float | None = None, device: str = "cpu",
                 optimize: bool = True, log: Callable[[str], None] | None = None,
                 opt_batch: int | None = None) -> ExportResult:
    """``ddpg export``: load a prior (name, YAML or config dict; weights from ``checkpoint``, the registry, or
    random), convert its torso to ``precision`` (``to_dtype``), export to ONNX at ``out`` and validate it against
    the float32 prior (run on ``device`` too) under ONNX Runtime on ``device``. ``format="tensorrt"`` also builds
    a TensorRT engine from the ONNX (``out`` with suffix .onnx) with ``ddpg.export.tensorrt_build``, its profile
    the batch range with ``opt_batch`` (the deployment batch; default the range's own opt) as opt."""
    if format not in ("onnx", "tensorrt"):
        raise ConfigError(f"--format {format!r}: choose onnx or tensorrt (OpenVINO IR: "
                          "ddpg.export.openvino_export.export_openvino)")
    require_export_packages(validate)
    batch = batch_profile(batch, opt_batch)
    build_engine = _tensorrt_builder() if format == "tensorrt" else None
    check_opset_precision(opset, precision)
    if validate:
        check_validation_device(device)
    if precision == "bf16" and validate:
        raise ConfigError("--precision bf16: ONNX Runtime cannot run it (ONNX Conv takes bfloat16 only from opset 22; "
                          "ddpg exports 18–20), so it cannot be validated here; the bf16 graph is for TensorRT: "
                          "add --no-validate, or use fp16")
    reference, ckpt_name, ckpt_sha = load_for_export(prior, checkpoint, random_weights)
    model = reference
    if precision != "fp32":
        if not hasattr(reference, "to_dtype"):
            raise ConfigError(f"prior {reference.config.get('kind')} has no mixed-precision path (to_dtype)")
        model = copy.deepcopy(reference).to_dtype(PRECISIONS[precision]).eval()
    out = Path(out)
    onnx_out = out.with_suffix(".onnx") if format == "tensorrt" else out
    result = export_module(model, onnx_out, size=size, batch=batch, opset=opset, precision=precision,
                           reference=reference, checkpoint=ckpt_name, checkpoint_sha256=ckpt_sha, validate=validate,
                           rtol=rtol, atol=atol, device=device, optimize=optimize, log=log)
    if build_engine is not None:
        result.engine = build_engine(onnx_out, out=out, precision=precision, log=log)  # profile: the batch range
    return result


def _tensorrt_builder():
    """``build_engine`` of ddpg.export.tensorrt_build, after checking that TensorRT imports (before the export)."""
    try:
        from .tensorrt_build import build_engine, require_tensorrt
    except ImportError as exc:
        raise ConfigError(f"--format tensorrt: TensorRT support is not available here ({exc}); export ONNX with "
                          "--format onnx and build on a machine with TensorRT") from exc
    require_tensorrt()
    return build_engine
