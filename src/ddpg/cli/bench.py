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
    **options,
) -> None:
    """Time whole restorations, UNet calls and the guidance; count FLOPs; check fp16 against fp32.

    Example: `ddpg bench --prior celeba_hq --precision fp16 --cuda-graph --batch 1,8,32 --json out/bench.json`
    """
    from ddpg.bench.harness import make_report, run_bench
    from ddpg.bench.report import markdown, write_all

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


__all__ = ["bench_command", "parse_batches"]
