"""The ASGI app of ``ddpg serve`` (Starlette): restore, jobs (:mod:`.job_routes`), models, health, readiness
and metrics routes over one :class:`Scheduler`, and the web page (:mod:`.static`).

``POST /v1/restore`` takes a multipart upload (``image`` file; optional ``mask`` and ``kernel`` files; the
settings as form fields) or JSON (``image`` base64; optional ``mask_png``/``kernel_npy`` base64; the settings
as members). Settings: task, method, preset, sigma_y, steps, seed, observed, mask (box | random[:R]), hyper
(an object), bits, response (png | json), deadline_s. It answers the restored PNG with the sidecar's metrics
in ``X-DDPG-*`` headers, or with ``response=json`` ``{"png": base64, "sidecar": {...}}``. Errors are JSON
``{"error": message, "field": name}``: 401 no or wrong token, 413 too many pixels or bytes, 422 a bad field,
429 queue full (``Retry-After``), 503 shutting down, 504 deadline passed. It runs as a job of the server's
:class:`JobStore` like ``POST /v1/jobs`` (docs/jobs.md), removed once answered.
"""

from __future__ import annotations

import asyncio
import hmac
import time

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ddpg.api.settings import CLI_TASKS

from .job_routes import accept, create_job, delete_job, job_events, job_observed, job_result, job_status
from .jobs import FIELDS, SERVED_METHODS, served_defaults
from .responses import OUTCOME_OF_STATUS, error, refused, restore_response
from .state import ServeState
from .static import index, static_file


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
    """Read, check and queue one restore request as a job, wait for it and answer; every failure is a JSON
    error, none a traceback. The job is removed once answered."""
    try:
        job = await accept(state, request, t0, kept=False)
    except Exception as exc:
        return refused(exc)
    try:
        if not await wait_or_disconnect(request, job.ended):
            state.jobs.cancel(job, "the client disconnected", 499)
            return error(499, "the client disconnected")
        if job.outcome != "done":
            return JSONResponse({k: v for k, v in job.error.items() if k != "status"}, job.error["status"])
        png = await run_in_threadpool(job.png_path.read_bytes)
        return restore_response(png, job.sidecar, job.response,
                                {**job.seconds(), "total": time.monotonic() - t0})
    finally:
        state.jobs.remove(job)


async def models(request: Request) -> Response:
    """The served prior and engine, batching, and what a form needs: the methods with the tasks each serves and
    their default σ_y and steps, the limits, whether a token is needed, how long jobs are kept."""
    state: ServeState = request.app.state.serve
    if state.defaults is None:
        state.defaults = await run_in_threadpool(served_defaults, state.preparer.prior)
    return JSONResponse({"models": [{**state.model_info, "methods": list(SERVED_METHODS), "tasks": list(CLI_TASKS),
                                     "fields": sorted(FIELDS), "max_batch": state.scheduler.max_batch,
                                     "max_batch_auto": state.auto_batch,
                                     "batch_seconds": {str(b): s for b, s in state.batch_seconds.items()},
                                     "policy": state.scheduler.policy,
                                     "method_tasks": {m: list(tasks) for m, tasks in state.defaults.items()},
                                     "defaults": state.defaults,
                                     "limits": {"max_pixels": state.preparer.max_pixels,
                                                "max_body_bytes": state.max_body_bytes},
                                     "token_required": state.token is not None,
                                     "jobs": {"ttl_s": state.jobs.ttl_s, "max_jobs": state.jobs.max_jobs}}]})


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
    """Test hook (``--test-hooks`` only): hold (``?paused=1``) or release the engine at a tick boundary; with
    ``&after=K`` hold it once K more ticks have run."""
    state: ServeState = request.app.state.serve
    after = request.query_params.get("after", "")
    state.scheduler.pause(request.query_params.get("paused", "1") == "1", int(after) if after.isdigit() else None)
    return JSONResponse({"queued": len(state.scheduler.queue), "active": len(state.scheduler.active)})


def make_app(state: ServeState) -> BearerAuth:
    routes = [Route("/v1/restore", restore, methods=["POST"]), Route("/v1/jobs", create_job, methods=["POST"]),
              Route("/v1/jobs/{job_id}", job_status), Route("/v1/jobs/{job_id}", delete_job, methods=["DELETE"]),
              Route("/v1/jobs/{job_id}/result", job_result), Route("/v1/jobs/{job_id}/observed", job_observed),
              Route("/v1/jobs/{job_id}/events", job_events),
              Route("/v1/models", models), Route("/healthz", healthz), Route("/readyz", readyz),
              Route("/metrics", metrics), Route("/", index), Route("/static/{name}", static_file)]
    if state.test_hooks:
        routes.append(Route("/test/pause", test_pause, methods=["POST"]))
    app = Starlette(routes=routes)
    app.state.serve = state
    return BearerAuth(app, state)


def open_route(path: str) -> bool:
    """Whether ``path`` is served without the token: ``/healthz``, the page and its assets."""
    return path in ("/healthz", "/") or path.startswith("/static/")


class BearerAuth:
    """ASGI wrapper: with a token, every route but ``/healthz``, the page and its assets needs
    ``Authorization: Bearer TOKEN`` (401)."""

    def __init__(self, app: Starlette, state: ServeState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not open_route(scope["path"]) and not authorized(self.state, Request(scope)):
            if scope["path"] in ("/v1/restore", "/v1/jobs") and scope["method"] == "POST":
                self.state.metrics.count("unauthorized")
            response = error(401, "missing or wrong bearer token (Authorization: Bearer ...)",
                             headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
