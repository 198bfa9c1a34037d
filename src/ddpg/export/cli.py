"""The ``ddpg export`` command (registered by ddpg.cli.main: ``app.command("export")(export_command)``).

Exit codes: 0 exported (and validated), 1 validation failed (nothing written), 2 usage or input errors.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from ddpg.errors import DdpgError

from .onnx_export import DEFAULT_BATCH, DEFAULT_OPSET, ExportError, export_prior

console = Console(stderr=True, soft_wrap=True)


def export_command(
    prior: str = typer.Option(None, "--prior", help="Prior name (e.g. celeba_hq, face64) or a prior YAML."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Weights file (default: the registry's)."),
    out: Path = typer.Option(..., "-o", "--output", help="Output file, e.g. model.onnx."),
    format: str = typer.Option("onnx", "--format", help="onnx | tensorrt"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | bf16 (torso only; I/O float32)."),
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
) -> None:
    """Export a prior to ONNX (and check it against PyTorch).

    Example: `ddpg export --prior face64 --precision fp16 --batch 1:1:8 --opt-batch 4 -o face64_fp16.onnx`
    """
    try:
        result = export_prior(prior, out=out, checkpoint=checkpoint, format=format, precision=precision, batch=batch,
                              size=size if size != (0, 0) else None, opset=opset, random_weights=random_weights,
                              validate=validate, rtol=rtol, atol=atol, device=device, opt_batch=opt_batch,
                              log=lambda message: console.print(escape(message), highlight=False))
    except ExportError as exc:
        console.print("[red]error:[/red]", escape(str(exc)), highlight=False)
        raise typer.Exit(1 if exc.report is not None else 2) from None
    except DdpgError as exc:
        console.print("[red]error:[/red]", escape(str(exc)), highlight=False)
        raise typer.Exit(2) from None
    written = [result.path, result.sidecar_path] + ([result.data_path] if result.data_path else [])
    console.print("wrote " + ", ".join(str(p) for p in written), highlight=False)
