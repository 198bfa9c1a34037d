"""``ddpg serve``: the Typer command (registered by ``ddpg.cli.main``); the server lives in :mod:`ddpg.serve`."""

from __future__ import annotations

import typer
from rich.markup import escape

from ddpg.errors import DdpgError
from ddpg.serve.options import ServeOptions
from ddpg.versions import install_hint

from .progress import console, setup_logging
from .schema import with_options


@with_options(ServeOptions)
def serve_command(quiet: bool = typer.Option(False, "-q", "--quiet", help="Warnings and errors only."),
                  **options) -> None:
    """Serve restorations over HTTP with step-level continuous batching (needs the serve extra).

    `POST /v1/restore` (multipart or JSON+base64, the settings of `ddpg restore`), `GET /v1/models`,
    `/healthz`, `/readyz`, `/metrics` (Prometheus). SIGTERM drains, then exits.

    Example: `ddpg serve --prior face64 --max-batch 8 --port 8000`
    """
    setup_logging(quiet)
    try:
        from ddpg.serve.server import serve  # the serve extra (uvicorn, starlette) and torch
    except ImportError as exc:
        console.print("[red]error:[/red]", escape(f"ddpg serve needs the serve extra: {install_hint('serve')} ({exc})"),
                      highlight=False)
        raise typer.Exit(2) from None
    try:
        serve(ServeOptions(**options),
              on_listening=lambda url: console.print(f"ddpg serve: listening on {url}", highlight=False))
    except DdpgError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
