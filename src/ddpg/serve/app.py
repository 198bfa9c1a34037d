"""The ASGI app of ``ddpg serve`` (Starlette): restore, models, health, readiness and metrics routes over one
:class:`Scheduler`.

``POST /v1/restore`` takes a multipart upload (``image`` file; optional ``mask`` and ``kernel`` files; the
settings as form fields) or JSON (``image`` base64; optional ``mask_png``/``kernel_npy`` base64; the settings
as members). Settings: task, method, preset, sigma_y, steps, seed, observed, mask (box | random[:R]), hyper
(an object), bits, response (png | json), deadline_s. It answers the restored PNG with the sidecar's metrics
in ``X-DDPG-*`` headers, or with ``response=json`` ``{"png": base64, "sidecar": {...}}``. Errors are JSON
``{"error": message, "field": name}``: 401 no or wrong token, 413 too many pixels or bytes, 422 a bad field,
429 queue full (``Retry-After``), 503 shutting down, 504 deadline passed.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import re
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ddpg.api.settings import CLI_TASKS
from ddpg.errors import DdpgError

from .jobs import (
    FIELDS,
    SERVED_METHODS,
    FieldError,
    Preparer,
    TooLarge,
    clipped,
    new_workdir,
    parse_fields,
    remove_workdir,
    write_result,
)
from .metrics import ServeMetrics
from .scheduler import QueueFull, Scheduler, ServeError
from .uploads import read_upload

log = logging.getLogger("ddpg")

OUTCOME_OF_STATUS = {401: "unauthorized", 413: "too_large", 422: "invalid", 429: "queue_full", 503: "draining",
                     504: "deadline", 499: "disconnected"}


def error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    """A JSON error; a run of over 80 characters without a space in ``message`` (a value a client sent,
    quoted by the library) is clipped."""
    message = re.sub(r"\S{81,}", lambda run: clipped(run[0]), message)
    return JSONResponse({"error": message, **({"field": field} if field else {})}, status, headers=headers)


class ServeState:
    """What the routes share: the scheduler, the request builder, metrics, the token and the limits."""

    def __init__(self, scheduler: Scheduler, preparer: Preparer, metrics: ServeMetrics, workroot: Path, *,
                 token: str | None = None, max_body_bytes: int = 32 << 20, model_info: dict | None = None,
                 test_hooks: bool = False):
        self.scheduler, self.preparer, self.metrics, self.workroot = scheduler, preparer, metrics, workroot
        self.token, self.max_body_bytes, self.test_hooks = token, max_body_bytes, test_hooks
        self.model_info = model_info or {}
        self.ready = False
        self.auto_batch = False  # --max-batch auto: warm-up chooses the scheduler's max_batch
        self.batch_seconds: dict[int, float] = {}  # auto's profile: batch -> seconds per denoiser call


def authorized(state: ServeState, request: Request) -> bool:
    """Whether the request carries the server's token (``Authorization: Bearer TOKEN``, the scheme in any
    case, RFC 7235), compared in constant time."""
    if state.token is None:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), state.token.encode())


async def wait_or_disconnect(request: Request, future: asyncio.Future) -> bool:
    """Wait for ``future``; False (and the future left alone) if the client disconnects first."""
    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({future, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    return future in done


def restore_response(png: bytes, sidecar: dict, kind: str, seconds: dict[str, float]) -> Response:
    """The restoration as a PNG (or JSON with the sidecar), its metrics and ``seconds`` (``prepare``: reading
    the upload, decoding and degrading it; ``queue``: waiting for a place in the engine's batch; ``total``: the
    whole request) in ``X-DDPG-*`` headers."""
    metrics = sidecar.get("metrics", {})
    headers = {f"X-DDPG-{k.replace('_', '-').title()}": str(v) for k, v in metrics.items()}
    headers.update({"X-DDPG-Seed": str(sidecar["seed"]), "X-DDPG-Steps": str(sidecar["steps"]),
                    "X-DDPG-Method": sidecar["method"]})
    headers.update({f"X-DDPG-{name.title()}-S": f"{value:.4f}" for name, value in seconds.items()})
    if kind == "json":
        return JSONResponse({"png": base64.b64encode(png).decode(), "sidecar": sidecar}, headers=headers)
    return Response(png, media_type="image/png", headers=headers)


async def restore(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    t0 = time.monotonic()
    response = await _restore(state, request, t0)
    outcome = "ok" if response.status_code == 200 else OUTCOME_OF_STATUS.get(response.status_code, "error")
    state.metrics.count(outcome)
    if outcome == "ok":
        state.metrics.latency.observe(time.monotonic() - t0)
        state.metrics.images.inc()
    return response


async def _restore(state: ServeState, request: Request, t0: float) -> Response:
    """Read, check, queue and answer one restore request; every failure is a JSON error, none a traceback."""
    if state.scheduler.draining:
        return error(503, "the server is shutting down and admits no new requests")
    workdir = None
    try:
        workdir = new_workdir(state.workroot)
        return await _run(state, request, workdir, t0)
    except FieldError as exc:
        return error(422, exc.message, exc.field)
    except TooLarge as exc:
        return error(413, str(exc), exc.field)
    except QueueFull as exc:
        return error(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})
    except ServeError as exc:
        return error(exc.status, str(exc))
    except ClientDisconnect:
        log.warning("ddpg serve: a client disconnected before its request was read")
        return error(499, "the client disconnected")
    except Exception as exc:  # a bug or the machine: logged once, answered without a traceback
        log.error("ddpg serve: a restore request failed: %s", exc, exc_info=not isinstance(exc, DdpgError))
        return error(500, f"restoration failed: {exc}" if isinstance(exc, DdpgError) else
                     f"the server failed on this request ({type(exc).__name__}); its log has the details")
    finally:
        if workdir is not None:
            remove_workdir(workdir)


async def _run(state: ServeState, request: Request, workdir: Path, t0: float) -> Response:
    upload = await read_upload(request, state.max_body_bytes, workdir)
    fields = parse_fields(upload.raw)
    if len(state.scheduler.queue) >= state.scheduler.max_queue:  # refuse before the work of preparing
        raise QueueFull(state.scheduler.retry_after_s())
    prepared = await run_in_threadpool(state.preparer.prepare, fields, upload, workdir, t0)
    submitted = time.monotonic()
    future = asyncio.wrap_future(state.scheduler.submit(prepared.sample))
    if not await wait_or_disconnect(request, future):
        state.scheduler.cancel(prepared.sample)
        return error(499, "the client disconnected")
    out = future.result()
    seconds = {"prepare": submitted - t0, "queue": max(0.0, prepared.sample.admitted - submitted),
               "total": time.monotonic() - t0}
    timing = {"queue_and_restore": round(time.monotonic() - submitted, 4), "queue": round(seconds["queue"], 4),
              "mean_batch": round(prepared.sample.ticks_shared / max(1, len(prepared.sample.rows)), 3)}
    png, sidecar = await run_in_threadpool(write_result, prepared, out, timing)
    return restore_response(png, sidecar, prepared.response, seconds)


async def models(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    return JSONResponse({"models": [{**state.model_info, "methods": list(SERVED_METHODS), "tasks": list(CLI_TASKS),
                                     "fields": sorted(FIELDS), "max_batch": state.scheduler.max_batch,
                                     "max_batch_auto": state.auto_batch,
                                     "batch_seconds": {str(b): s for b, s in state.batch_seconds.items()},
                                     "policy": state.scheduler.policy}]})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    if state.scheduler.draining:
        return JSONResponse({"status": "draining"}, 503)
    return JSONResponse({"status": "ready"} if state.ready else {"status": "warming up"}, 200 if state.ready else 503)


async def metrics(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    return Response(state.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def test_pause(request: Request) -> Response:
    """Test hook (``--test-hooks`` only): hold (``?paused=1``) or release the engine at a tick boundary."""
    state: ServeState = request.app.state.serve
    state.scheduler.pause(request.query_params.get("paused", "1") == "1")
    return JSONResponse({"queued": len(state.scheduler.queue), "active": len(state.scheduler.active)})


def make_app(state: ServeState) -> BearerAuth:
    routes = [Route("/v1/restore", restore, methods=["POST"]), Route("/v1/models", models),
              Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    if state.test_hooks:
        routes.append(Route("/test/pause", test_pause, methods=["POST"]))
    app = Starlette(routes=routes)
    app.state.serve = state
    return BearerAuth(app, state)


class BearerAuth:
    """ASGI wrapper: with a token, every route but ``/healthz`` needs ``Authorization: Bearer TOKEN`` (401)."""

    def __init__(self, app: Starlette, state: ServeState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] != "/healthz" and \
                not authorized(self.state, Request(scope)):
            if scope["path"] == "/v1/restore":
                self.state.metrics.count("unauthorized")
            response = error(401, "missing or wrong bearer token (Authorization: Bearer ...)",
                             headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
