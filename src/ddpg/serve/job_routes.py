"""The job routes of ``ddpg serve`` (docs/jobs.md): submit (``POST /v1/jobs``), status, result, cancel or delete,
and the progress of a job as Server-Sent Events. :func:`accept` turns a request into a queued job for these
routes and for ``POST /v1/restore`` alike."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .job_store import Job, Listener, lost
from .jobs import FieldError, new_workdir, parse_fields, remove_workdir
from .responses import OUTCOME_OF_STATUS, error, refused, restore_response
from .scheduler import Draining, QueueFull
from .state import ServeState
from .uploads import read_upload

KEEPALIVE_S = 15.0  # a comment line on an idle event stream this often


async def accept(state: ServeState, request: Request, arrived: float, kept: bool) -> Job:
    """Read, check and prepare a restore request and queue it as a job; raises what the request is refused
    for (FieldError, TooLarge, QueueFull, Draining, ClientDisconnect, …), its folder then removed."""
    if state.scheduler.draining:
        raise Draining("the server is shutting down and admits no new requests")
    workdir = new_workdir(state.workroot)
    try:
        upload = await read_upload(request, state.max_body_bytes, workdir)
        fields = parse_fields(upload.raw)
        if len(state.scheduler.queue) >= state.scheduler.max_queue:  # refuse before the work of preparing
            raise QueueFull(state.scheduler.retry_after_s())
        prepared = await run_in_threadpool(state.preparer.prepare, fields, upload, workdir, arrived)
        return state.jobs.submit(prepared, arrived, kept)
    except BaseException:
        remove_workdir(workdir)
        raise


def urls(job_id: str) -> dict[str, str]:
    base = f"/v1/jobs/{job_id}"
    return {"self": base, "events": f"{base}/events", "result": f"{base}/result", "observed": f"{base}/observed"}


async def create_job(request: Request) -> Response:
    """``POST /v1/jobs``: 202 with the job's id and URLs, or the refusal /v1/restore would answer."""
    state: ServeState = request.app.state.serve
    try:
        job = await accept(state, request, time.monotonic(), kept=True)
    except Exception as exc:
        response = refused(exc)
        state.metrics.count(OUTCOME_OF_STATUS.get(response.status_code, "error"))
        return response
    body = {key: value for key, value in state.jobs.status(job).items() if key in ("id", "state", "position")}
    body["urls"] = urls(job.id)
    return JSONResponse(body, 202, headers={"Location": urls(job.id)["self"]})


def found(request: Request) -> Job | Response:
    """The job the path names, or its 404."""
    state: ServeState = request.app.state.serve
    job_id = request.path_params["job_id"]
    return state.jobs.get(job_id) or error(404, lost(job_id))


async def job_status(request: Request) -> Response:
    """``GET /v1/jobs/{id}``."""
    job = found(request)
    if isinstance(job, Response):
        return job
    return JSONResponse(request.app.state.serve.jobs.status(job))


async def delete_job(request: Request) -> Response:
    """``DELETE /v1/jobs/{id}``: cancel an unfinished job (its status then says cancelled), or remove a
    finished one with its files (its last status answered)."""
    job = found(request)
    if isinstance(job, Response):
        return job
    jobs = request.app.state.serve.jobs
    if job.outcome is None:
        jobs.cancel(job, "the job was cancelled", 409)
        return JSONResponse(jobs.status(job))
    status = jobs.status(job)
    jobs.remove(job)
    return JSONResponse(status)


def unfinished(job: Job) -> Response | None:
    """``409 {"error", "state"}`` while the job waits or runs; None once it has ended."""
    if job.outcome is not None:
        return None
    return JSONResponse({"error": f"job {job.id} is {job.state}", "state": job.state}, 409)


def read_observed(job: Job) -> bytes | None:
    """The bytes of a done job's observation PNG, None if its restoration wrote none; FileNotFoundError if its
    folder is gone."""
    path = job.observed_path
    return None if path is None else path.read_bytes()


async def job_result(request: Request) -> Response:
    """``GET /v1/jobs/{id}/result[?format=json]``: the restored PNG (the bytes and headers /v1/restore answers)
    or JSON with the sidecar and the observation; 409 before the end; a failed or cancelled job's error."""
    job = found(request)
    if isinstance(job, Response):
        return job
    kind = request.query_params.get("format", "png")
    if kind not in ("png", "json"):
        return error(422, f"format must be png or json, got {kind!r}", "format")
    waiting = unfinished(job)
    if waiting is not None:
        return waiting
    if job.outcome != "done":
        body = {key: value for key, value in job.error.items() if key != "status"}
        return JSONResponse({**body, "state": job.outcome}, job.error["status"])
    try:
        png = await run_in_threadpool(job.png_path.read_bytes)
        observed = await run_in_threadpool(read_observed, job) if kind == "json" else None
    except FileNotFoundError:  # removed meanwhile
        return error(404, lost(job.id))
    seconds = {**job.seconds(), "total": job.finished - job.arrived}
    return restore_response(png, job.sidecar, kind, seconds, observed)


async def job_observed(request: Request) -> Response:
    """``GET /v1/jobs/{id}/observed``: the observation as ``image/png``, the file ``ddpg restore`` writes beside
    its result (``<stem>_observed.png``: the measurement the restoration started from); 409 before the end; 404
    for a job that has none (failed or cancelled: its files went when it ended)."""
    job = found(request)
    if isinstance(job, Response):
        return job
    waiting = unfinished(job)
    if waiting is not None:
        return waiting
    try:
        observed = await run_in_threadpool(read_observed, job)
    except FileNotFoundError:  # removed meanwhile
        return error(404, lost(job.id))
    if observed is None:
        kept = "" if job.outcome == "done" else " (a failed or cancelled job keeps no files)"
        return JSONResponse({"error": f"job {job.id} is {job.outcome}: it has no observation{kept}",
                             "state": job.outcome}, 404)
    return Response(observed, media_type="image/png")


def event(name: str, body: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(body)}\n\n"


def stream_options(request: Request) -> tuple[int, bool]:
    """(every, preview) of an events request; FieldError naming a bad one."""
    every, preview = request.query_params.get("every", "1"), request.query_params.get("preview", "0").lower()
    if not every.isdigit() or int(every) < 1:
        raise FieldError("every", f"expected a whole number >= 1, got {every[:20]!r}")
    if preview not in ("0", "1", "true", "false"):
        raise FieldError("preview", f"expected 0 or 1, got {preview[:20]!r}")
    return int(every), preview in ("1", "true")


async def job_events(request: Request) -> Response:
    """``GET /v1/jobs/{id}/events?every=K&preview=1``: Server-Sent Events (docs/jobs.md §5)."""
    job = found(request)
    if isinstance(job, Response):
        return job
    jobs = request.app.state.serve.jobs
    try:
        listener = jobs.listen(job, *stream_options(request))
    except Exception as exc:
        return refused(exc)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(jobs, job, listener), media_type="text/event-stream", headers=headers)


async def events(jobs, job: Job, listener: Listener) -> AsyncIterator[str]:
    """``status``, the step events after its step as they come, the final event; a keep-alive comment when
    idle. The listener leaves the job however the stream ends (the client gone included)."""
    try:
        status = jobs.status(job)
        yield event("status", status)
        while True:
            if listener.steps:
                step = listener.steps.popleft()
                if step["step"] > status["step"]:  # steps done before the status was taken are in it
                    yield event("step", step)
            elif listener.final is not None:
                yield event(*listener.final)
                return
            else:
                listener.wake.clear()
                try:
                    await asyncio.wait_for(listener.wake.wait(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
    finally:
        jobs.unlisten(job, listener)

