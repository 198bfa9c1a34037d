"""``ddpg bench``: the Typer command (registered by ``ddpg.cli.main`` as ``app.command("bench")(bench_command)``)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from ddpg.bench.config import BenchConfig
from ddpg.errors import DdpgError

from .schema import with_options


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


@with_options(BenchConfig)
def bench_command(
    batch: str = typer.Option("1", help="Batch sizes, comma-separated, e.g. 1,8,32."),
    json_path: Path = typer.Option(None, "--json", help="Write JSON here, plus .md and .png with the same stem."),
    compare_cpu_engines: bool = typer.Option(False, "--compare-cpu-engines", help="CPU: torch fp32/bf16, ONNX Runtime "
                                             "fp32 and OpenVINO fp32/bf16/int8 side by side, interleaved rounds "
                                             "(--engine: the prior's float32 ONNX export, dynamic batch)."),
    ir: list[str] = typer.Option([], "--ir", help="--compare-cpu-engines: PRECISION=IR.xml, an OpenVINO IR from ddpg "
                                                 "export (int8 only this way; fp32/bf16 default: converted from "
                                                 "--engine). Repeatable."),
    rounds: int = typer.Option(3, "--rounds", help="--compare-cpu-engines: interleaved rounds (minimum reported)."),
    **options,
) -> None:
    """Time whole restorations, UNet calls and the guidance; count FLOPs; check fp16 against fp32.

    Example: `ddpg bench --prior celeba_hq --precision fp16 --cuda-graph --batch 1,8,32 --json out/bench.json`
    """
    from ddpg.bench.harness import make_report, run_bench
    from ddpg.bench.report import markdown, write_all

    if compare_cpu_engines:
        _compare_cpu(parse_batches(batch), json_path, ir, rounds, options)
        return
    cfg = BenchConfig(batches=parse_batches(batch), **options)
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


def _compare_cpu(batches: list[int], json_path: Path | None, irs: list[str], rounds: int, options: dict) -> None:
    """``--compare-cpu-engines``: the side-by-side table (ddpg.bench.cpu_compare), printed and, with --json, written
    as JSON and Markdown with the command, the machine and the load of each round."""
    import json
    import platform

    from ddpg.bench.cpu_compare import compare_cpu_engines, markdown_table
    from ddpg.bench.report import cpu_name

    pairs = dict(item.split("=", 1) for item in irs if "=" in item)
    if (options.get("engine") is None or options.get("device") not in ("cpu", "auto") or len(pairs) != len(irs)
            or not set(pairs) <= {"fp32", "bf16", "int8"}):
        print("error: --compare-cpu-engines needs --engine MODEL.onnx (the prior's float32 export), runs on the CPU, "
              "and takes --ir fp32|bf16|int8=IR.xml", file=sys.stderr)
        raise typer.Exit(2)
    try:
        result = compare_cpu_engines(options["prior"], options["engine"], irs=pairs, batches=batches,
                                     steps=options["steps"], rounds=rounds, threads=options["threads"],
                                     log=lambda message: print(message, file=sys.stderr))
    except DdpgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    result.update(command="ddpg bench " + shlex.join(sys.argv[2:]), machine=f"{cpu_name()}, {platform.platform()}")
    table = markdown_table(result)
    print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))
        loads = ", ".join(f"{v:.2f}" for v in result["load_per_round"])
        json_path.with_suffix(".md").write_text(
            f"# CPU engines side by side: {result['prior']}, {result['task']}\n\nCommand: `{result['command']}`\n\n"
            f"Machine: {result['machine']}, {result['cpus']} CPUs, {result['threads']} thread(s); load average at "
            f"each round's start: {loads}\n\nms/step: one DDPG step (UNet + guidance) of the whole batch, the "
            f"minimum over the rounds of {result['steps_timed']}-step restorations; images/s and s/image at "
            f"{result['full_steps']} steps from it; × torch fp32: its s/image over the engine's.\n\n{table}\n\n"
            f"Median over the rounds, ms/step by batch: " + "; ".join(
                f"{label} " + ", ".join(f"{b}: {row['ms_per_step_median']:.0f}" for b, row in e["per_batch"].items())
                for label, e in result["engines"].items()) + "\n")
        print(f"wrote {json_path} and {json_path.with_suffix('.md')}", file=sys.stderr)


__all__ = ["bench_command", "parse_batches"]
