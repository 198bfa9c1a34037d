"""``ddpg serve``: the Typer command (registered by ``ddpg.cli.main``); the server lives in :mod:`ddpg.serve`."""

from __future__ import annotations

import typer

from ddpg.errors import DdpgError

from .progress import console, setup_logging


def serve_command(
    prior: str = typer.Option("face64", help="Prior name or YAML config (torch backend)."),
    backend: str = typer.Option("torch", help="torch | onnxruntime | tensorrt"),
    engine: str = typer.Option(None, help="ONNX model or TensorRT plan for --backend onnxruntime/tensorrt."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N (one process per GPU)."),
    class_label: int = typer.Option(None, help="Class for class-conditional priors."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (localhost by default)."),
    port: int = typer.Option(8000, help="TCP port (0: one the OS picks; the URL is printed once bound)."),
    max_batch: str = typer.Option("8", help="Samples per engine tick at most, or auto: the smallest batch within "
                                  "10 % of the best images/s of the denoiser timed at batch 1, 2, 4, … (up to 64) "
                                  "at start-up."),
    max_queue: int = typer.Option(64, help="Requests waiting for admission at most (beyond: 429)."),
    engine_batch: int = typer.Option(None, help="Pad every denoiser call to this batch (fixed-batch engines)."),
    policy: str = typer.Option("continuous", help="continuous | request (request-level batching) | single."),
    batch_wait_ms: float = typer.Option(50.0, help="--policy request: wait up to this long to fill a batch."),
    max_pixels: int = typer.Option(1 << 20, help="Largest image accepted, in pixels (beyond: 413)."),
    request_timeout: float = typer.Option(600.0, help="Default per-request deadline in seconds (504 after)."),
    drain_timeout: float = typer.Option(30.0, help="On SIGTERM: seconds to finish the requests in flight."),
    token_file: str = typer.Option(None, help="File holding a bearer token every route but /healthz needs."),
    test_hooks: bool = typer.Option(False, "--test-hooks", hidden=True, help="Enable POST /test/pause."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Warnings and errors only."),
) -> None:
    """Serve restorations over HTTP with step-level continuous batching (needs `pip install ddpg[serve]`).

    `POST /v1/restore` (multipart or JSON+base64, the settings of `ddpg restore`), `GET /v1/models`,
    `/healthz`, `/readyz`, `/metrics` (Prometheus). SIGTERM drains, then exits.

    Example: `ddpg serve --prior face64 --max-batch 8 --port 8000`
    """
    setup_logging(quiet)
    try:
        from ddpg.serve.server import ServeOptions, serve
    except ImportError as exc:
        console.print(f"[red]error:[/red] ddpg serve needs the serve extra (pip install 'ddpg[serve]'): {exc}")
        raise typer.Exit(2) from None
    try:
        serve(ServeOptions(prior, backend, engine, device, class_label, host, port, max_batch, max_queue,
                           engine_batch, policy, batch_wait_ms, max_pixels, request_timeout_s=request_timeout,
                           drain_timeout_s=drain_timeout, token_file=token_file, test_hooks=test_hooks),
              on_listening=lambda url: console.print(f"ddpg serve: listening on {url}", highlight=False))
    except DdpgError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
