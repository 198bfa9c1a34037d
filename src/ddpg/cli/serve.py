"""``ddpg serve``: the Typer command (registered by ``ddpg.cli.main``); the server lives in :mod:`ddpg.serve`."""

from __future__ import annotations

import typer

from ddpg.errors import DdpgError
from ddpg.serve.options import ServeOptions

from .progress import console, setup_logging
from .schema import with_options


@with_options(ServeOptions)
def serve_command(quiet: bool = typer.Option(False, "-q", "--quiet", help="Warnings and errors only."),
                  **options) -> None:
    """Serve restorations over HTTP with step-level continuous batching (needs `pip install ddpg[serve]`).

    `POST /v1/restore` (multipart or JSON+base64, the settings of `ddpg restore`), `GET /v1/models`,
    `/healthz`, `/readyz`, `/metrics` (Prometheus). SIGTERM drains, then exits.

    Example: `ddpg serve --prior face64 --max-batch 8 --port 8000`
    """
    setup_logging(quiet)
    try:
        from ddpg.serve.server import serve  # the serve extra (uvicorn, starlette) and torch
    except ImportError as exc:
        console.print(f"[red]error:[/red] ddpg serve needs the serve extra (pip install 'ddpg[serve]'): {exc}")
        raise typer.Exit(2) from None
    try:
        serve(ServeOptions(**options),
              on_listening=lambda url: console.print(f"ddpg serve: listening on {url}", highlight=False))
    except DdpgError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
