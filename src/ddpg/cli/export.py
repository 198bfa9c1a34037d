"""The ``ddpg export`` command (and ``ddpg build-engine``, registered by ddpg.cli.main).

Exit codes: 0 exported (and validated), 1 validation failed (nothing written) or an OpenVINO export failed its
quality gate (written, the failure recorded in its metadata), 2 usage or input errors.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from ddpg.errors import DdpgError
from ddpg.export.defaults import DEFAULT_BATCH, DEFAULT_OPSET, DEFAULT_OPT_LEVEL, DEFAULT_WORKSPACE_GIB

console = Console(stderr=True, soft_wrap=True)


def export_command(
    prior: str = typer.Option(None, "--prior", help="Prior name (e.g. celeba_hq, face64) or a prior YAML."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Weights file (default: the registry's)."),
    out: Path = typer.Option(..., "-o", "--output", help="Output file, e.g. model.onnx."),
    format: str = typer.Option("onnx", "--format", help="onnx | tensorrt | openvino (an IR NAME.xml + NAME.bin)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | bf16 (torso only; I/O float32); "
                                                              "openvino: fp32 | bf16 | int8."),
    batch: str = typer.Option(DEFAULT_BATCH, "--batch", help="N (fixed) or MIN:OPT:MAX (dynamic batch)."),
    opt_batch: int = typer.Option(None, "--opt-batch", help="The deployment batch, which TensorRT tunes for "
                                                            "(replaces OPT of --batch; within MIN..MAX)."),
    size: tuple[int, int] = typer.Option((0, 0), "--size", show_default=False,
                                        help="H W (default: the prior's image size)."),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", help="ONNX opset, 18..20."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Untrained weights (benchmarks, tests)."),
    validate: bool = typer.Option(True, "--validate/--no-validate", help="Compare with PyTorch after export."),
    rtol: float = typer.Option(None, "--rtol", help="Max relative L2 error (default fp32 1e-5, fp16/bf16 1e-2)."),
    atol: float = typer.Option(None, "--atol", help="Max absolute error (default: not checked)."),
    device: str = typer.Option("cpu", "--device", help="Where validation runs ONNX Runtime: cpu | cuda."),
    calibration: Path = typer.Option(None, "--calibration", help="openvino int8: folder of clean images, restored "
                                                                 "to record the (x_t, t) pairs NNCF calibrates on."),
    gate: Path = typer.Option(None, "--gate", help="openvino: folder of clean faces for the restoration quality "
                                                   "gate (mean PSNR vs fp32: bf16 within 0.1 dB, int8 0.2 dB)."),
    gate_limit: int = typer.Option(None, "--gate-limit", help="Gate on the first N faces of --gate only."),
    gate_steps: int = typer.Option(100, "--gate-steps", help="Sampling steps of the gate's restorations."),
) -> None:
    """Export a prior to ONNX (and check it against PyTorch).

    Example: `ddpg export --prior face64 --precision fp16 --batch 1:1:8 --opt-batch 4 -o face64_fp16.onnx`
    """
    from ddpg.export.onnx_export import ExportError, export_prior

    def log(message: str) -> None:
        console.print(escape(message), highlight=False)

    try:
        if format == "openvino":
            result = _export_openvino(prior, out, checkpoint, precision, batch, opt_batch, size, opset, random_weights,
                                      validate, rtol, atol, calibration, gate, gate_limit, gate_steps, log)
        else:
            result = export_prior(prior, out=out, checkpoint=checkpoint, format=format, precision=precision,
                                  batch=batch, size=size if size != (0, 0) else None, opset=opset,
                                  random_weights=random_weights, validate=validate, rtol=rtol, atol=atol,
                                  device=device, opt_batch=opt_batch, log=log)
    except ExportError as exc:
        console.print("[red]error:[/red]", escape(str(exc)), highlight=False)
        raise typer.Exit(1 if exc.report is not None else 2) from None
    except DdpgError as exc:
        console.print("[red]error:[/red]", escape(str(exc)), highlight=False)
        raise typer.Exit(2) from None
    written = [result.path, result.sidecar_path] + ([result.data_path] if result.data_path else [])
    console.print("wrote " + ", ".join(str(p) for p in written), highlight=False)
    if result.gate is not None and not result.gate.passed:
        console.print(f"[red]error:[/red] {escape(str(result.path))} FAILED its quality gate (recorded in its "
                      "metadata; the openvino backend warns whenever it loads it)", highlight=False)
        raise typer.Exit(1)


def _export_openvino(prior, out, checkpoint, precision, batch, opt_batch, size, opset, random_weights, validate,
                     rtol, atol, calibration, gate, gate_limit, gate_steps, log):
    from ddpg.export.onnx_export import batch_profile
    from ddpg.export.openvino_export import OpenVINOExport, export_openvino

    settings = OpenVINOExport(precision=precision, calibration=calibration, gate_faces=gate, gate_limit=gate_limit,
                              gate_steps=gate_steps)
    return export_openvino(prior, out=out, settings=settings, checkpoint=checkpoint,
                           batch=batch_profile(batch, opt_batch), size=size if size != (0, 0) else None, opset=opset,
                           random_weights=random_weights, validate=validate, rtol=rtol, atol=atol, log=log)


def build_engine_command(
    onnx_file: Path = typer.Argument(..., help="ONNX model written by `ddpg export`."),
    out: Path = typer.Option(None, "-o", "--output", help="Engine file (default: in the engine cache)."),
    batch: str = typer.Option(None, "--batch", help="Profiles: N or MIN:OPT:MAX, comma-separated for several "
                                                    "(default: the export's batch range)."),
    size: str = typer.Option(None, "--size", help="H or HxW; must be the exported size."),
    precision: str = typer.Option(None, "--precision", help="fp32 | fp16 | bf16 (default: the ONNX's)."),
    opt_level: int = typer.Option(DEFAULT_OPT_LEVEL, "--opt-level", help="Builder optimization level 0..5."),
    workspace: float = typer.Option(DEFAULT_WORKSPACE_GIB, "--workspace", help="Workspace limit in GiB."),
    timing_cache: Path = typer.Option(None, "--timing-cache", help="Timing cache file (default: per GPU and "
                                                                   "TensorRT version, in the cache folder)."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Engine cache folder."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when a matching engine exists."),
    tf32: bool = typer.Option(False, "--tf32", help="Allow TF32 in fp32 layers (faster, ~1e-3 relative error)."),
) -> None:
    """Build (or reuse) a TensorRT engine from an exported ONNX model.

    Example: `ddpg build-engine face64.onnx --batch 1,2:4:8 -o face64.plan`
    """
    from ddpg.engine_metadata import read_metadata
    from ddpg.export.engine_cache import parse_batches, parse_size, profiles_for
    from ddpg.export.tensorrt_build import build_engine

    try:
        info = read_metadata(onnx_file)
        profiles = None
        if batch is not None or size is not None:
            profiles = profiles_for(info, parse_batches(batch) if batch else None,
                                    parse_size(size) if size else None)
        record = build_engine(onnx_file, out=out, profiles=profiles, precision=precision, opt_level=opt_level,
                              workspace_gib=workspace, timing_cache=timing_cache, cache_dir=cache_dir, force=force,
                              tf32=tf32, log=lambda message: typer.echo(message, err=True))
    except DdpgError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    state = "reused" if record.cache_hit else f"built in {record.build_seconds:.1f} s"
    typer.echo(f"{record.path} ({state}; sidecar {record.sidecar_path.name})")
