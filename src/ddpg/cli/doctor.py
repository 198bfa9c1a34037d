"""``ddpg doctor``: the Typer command (registered by ``ddpg.cli.main``); the probes are ``ddpg.bench.doctor``."""

from __future__ import annotations

import json

import typer

from ddpg.bench.doctor import collect, render_text


def doctor_command(
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Show which backends (torch, ONNX Runtime, TensorRT) are usable here, and why not.

    Example: `ddpg doctor --json`
    """
    report = collect()
    typer.echo(json.dumps(report, indent=2) if json_output else render_text(report))
