"""``ddpg bench``: the Typer command (registered by ``ddpg.cli.main`` as ``app.command("bench")(bench_command)``)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from ddpg.bench.harness import BenchConfig, make_report, run_bench
from ddpg.bench.report import markdown, write_all
from ddpg.checks import DEFAULT_SIGMA_Y
from ddpg.errors import DdpgError


def parse_batches(text: str) -> list[int]:
    """"1,8,32" → [1, 8, 32]."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give comma-separated integers, e.g. 1,8,32",
                                 param_hint="--batch") from None
    if not values or any(v < 1 for v in values):
        raise typer.BadParameter(f"{text!r}: batch sizes must be >= 1", param_hint="--batch") from None
    return values


def bench_command(
    prior: str = typer.Option("face64", help="Prior name, YAML path, or inline mapping '{kind: ddpm, ch: 16, ...}'."),
    backend: str = typer.Option("torch", help="torch | onnxruntime | tensorrt"),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | bf16 (the UNet torso; guidance stays fp32)."),
    batch: str = typer.Option("1", help="Batch sizes, comma-separated, e.g. 1,8,32."),
    steps: int = typer.Option(100, help="Sampling steps per restoration."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the UNet (torch backend)."),
    compile_mode: str = typer.Option("default", help="torch.compile mode."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="Capture the whole sampler step in a CUDA graph."),
    channels_last: bool = typer.Option(None, "--channels-last/--no-channels-last",
                                       help="Channels-last UNet (default: only with --compile)."),
    plain: bool = typer.Option(False, "--plain", help="The unmodified eager fp32 path (the baseline)."),
    size: int = typer.Option(None, help="Image size (default: the prior's)."),
    checkpoint: str = typer.Option(None, help="Weights file, or 'auto' (bundled/cached); default random weights."),
    engine: str = typer.Option(None, help="ONNX model / TensorRT plan (default: exported from the prior)."),
    task: str = typer.Option("sr4", help="Degradation (sr4 uses the FFT operator)."),
    sigma_y: float = typer.Option(DEFAULT_SIGMA_Y, "--sigma-y", help="Measurement noise std on the [0, 1] scale."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    iters: int = typer.Option(20, help="Timed UNet / guidance calls per batch size."),
    warmup: int = typer.Option(3, help="Untimed calls before timing."),
    repeats: int = typer.Option(1, help="Timed whole restorations per batch size (after one warm-up)."),
    accuracy: bool = typer.Option(True, "--accuracy/--no-accuracy", help="Low-precision vs fp32 PSNR check."),
    profile: bool = typer.Option(True, "--profile/--no-profile",
                                 help="torch.profiler summary of a few UNet and guidance calls per batch size."),
    json_path: Path = typer.Option(None, "--json", help="Write JSON here, plus .md and .png with the same stem."),
) -> None:
    """Time whole restorations, UNet calls and the guidance; count FLOPs; check fp16 against fp32.

    Example: `ddpg bench --prior celeba_hq --precision fp16 --cuda-graph --batch 1,8,32 --json out/bench.json`
    """
    cfg = BenchConfig(prior=prior, checkpoint=checkpoint, backend=backend, engine=engine, precision=precision,
                      batches=parse_batches(batch), steps=steps, compile=compile, compile_mode=compile_mode,
                      cuda_graph=cuda_graph, channels_last=channels_last, plain=plain, size=size, task=task,
                      sigma_y=sigma_y, device=device, iters=iters, warmup=warmup, repeats=repeats, accuracy=accuracy,
                      profile=profile)
    try:
        series = run_bench(cfg, log=lambda message: print(message, file=sys.stderr))
    except DdpgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    command = "ddpg bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 else None
    prior_cfg = series["config"]["prior"]
    prior_name = prior_cfg.get("name", f"inline {prior_cfg.get('kind')}") if isinstance(prior_cfg, dict) else prior_cfg
    report = make_report([series], title=f"{prior_name} / {series['label']}", command=command)
    if json_path is not None:
        for path in write_all(report, json_path):
            print(f"wrote {path}", file=sys.stderr)
    print(markdown(report))


__all__ = ["bench_command", "parse_batches"]
