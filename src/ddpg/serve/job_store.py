"""The jobs of ``ddpg serve`` (docs/jobs.md): every restoration, whether from ``POST /v1/jobs`` or
``POST /v1/restore``, is a :class:`Job` in the server's :class:`JobStore`, which follows it from the queue to
its end, tells its listeners each step (with a preview of x̂₀ when one asks for it) and removes it with its
folder when it is deleted, after ``ttl_s`` or when more than ``max_jobs`` finished jobs are kept.

Threads: the store and its jobs live in the event loop; the engine thread only calls :meth:`Job.on_step`,
which hands events to the loop (``call_soon_threadsafe``) and reads the job's listeners as one tuple."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ddpg.io import to_uint

from .jobs import Prepared, remove_workdir, write_result
from .responses import OUTCOME_OF_STATUS, error_body, refusal
from .scheduler import Sample, Scheduler, ServeError

log = logging.getLogger("ddpg")

PREVIEW_SIDE = 128  # a preview's long side at most, in pixels
MAX_LISTENERS = 32  # event-stream listeners per job at most (beyond: 429)
EVENTS_KEPT = 64  # step events waiting for a slow listener at most (the oldest dropped first)
FINAL_STATES = ("done", "failed", "cancelled")


def lost(job_id: str) -> str:
    """The 404 message of a job this server does not hold."""
    return f"no job {job_id}: unknown, expired, or lost when the server restarted"


class TooManyListeners(ServeError):
    status = 429


def preview_png(x0: torch.Tensor, size: tuple[int, int]) -> str:
    """Base64 PNG of x̂₀ (1,3,H',W') in [-1, 1] at the padded size: cropped to the image's ``size`` (H, W) and
    shrunk (area average) to at most :data:`PREVIEW_SIDE` pixels on its long side."""
    img = x0[:, :, :size[0], :size[1]].float()
    scale = PREVIEW_SIDE / max(size)
    if scale < 1:
        img = F.interpolate(img, size=(max(1, round(size[0] * scale)), max(1, round(size[1] * scale))), mode="area")
    buffer = io.BytesIO()
    Image.fromarray(to_uint((img[0].cpu() + 1) / 2)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@dataclass(eq=False)
class Listener:
    """One event stream of a job: its step events waiting to be sent and, once the job ended, its final event."""

    every: int  # a step event every ``every`` steps (and the last step)
    preview: bool
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    steps: deque = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))
    final: tuple[str, dict] | None = None  # (state, status body)

    def wants(self, step: int, steps: int) -> bool:
        return step % self.every == 0 or step == steps

    def push(self, event: dict) -> None:
        self.steps.append(event)
        self.wake.set()

    def end(self, state: str, status: dict) -> None:
        self.final = (state, status)
        self.wake.set()


@dataclass(eq=False)
class Job:
    """One restoration: its prepared sample until it ends (then only what its status and result need, so a
    finished job holds no tensor), its folder, when it arrived (``time.monotonic()``) and how it ended."""

    id: str
    prepared: Prepared | None  # None once ended
    loop: asyncio.AbstractEventLoop
    arrived: float  # the request's receipt
    submitted: float  # its sample queued
    kept: bool  # a /v1/jobs job, kept after its end; /v1/restore removes its own when it has answered
    created: float = field(default_factory=time.time)
    ended: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    outcome: str | None = None  # done / failed / cancelled once it ended
    error: dict | None = None  # failed or cancelled: the error body with its "status"
    finished: float | None = None
    sidecar: dict | None = None
    listeners: tuple[Listener, ...] = ()
    step: int = 0  # steps done, once ended
    admitted: float = 0.0  # when its sample joined the engine's batch, once ended (0: never)
    follower: asyncio.Task | None = None  # JobStore._follow of it (held here: the loop keeps tasks weakly)

    def __post_init__(self) -> None:
        prepared = self.prepared
        self.workdir, self.stem, self.size = prepared.workdir, prepared.job.stem, prepared.job.size
        self.steps, self.settings, self.response = len(prepared.sample.rows), prepared.plan.settings, prepared.response

    @property
    def png_path(self) -> Path:
        return self.workdir / f"{self.stem}_restored.png"

    @property
    def observed_path(self) -> Path | None:
        """The observation PNG ``ddpg restore``'s writer put beside the result (the file its sidecar names:
        the measurement the restorer started from, in [0, 1]); None before the job is done or if it names none."""
        name = (self.sidecar or {}).get("outputs", {}).get("observed")
        return None if name is None else self.workdir / name

    def progress(self) -> tuple[int, float]:
        """(steps done, when it joined the engine's batch or 0)."""
        sample = self.prepared.sample if self.prepared is not None else None
        return (sample.index, sample.admitted) if sample is not None else (self.step, self.admitted)

    @property
    def state(self) -> str:
        return self.outcome or ("running" if self.progress()[1] else "queued")

    def release(self) -> None:
        """Keep what the status needs and drop the sample (its tensors, its result)."""
        self.step, self.admitted = self.progress()
        self.prepared = None

    def seconds(self) -> dict[str, float]:
        """``prepare`` (reading, decoding and degrading the upload) and ``queue`` (waiting for a place in the
        engine's batch; so far, while queued), in seconds."""
        admitted = self.progress()[1] or self.finished or time.monotonic()
        return {"prepare": self.submitted - self.arrived, "queue": max(0.0, admitted - self.submitted)}

    def on_step(self, sample: Sample) -> None:
        """Engine thread, after each step: a step event (with a preview for those who asked) to each listener
        that wants this step. A failure here is logged and never stops the engine."""
        try:
            step, steps = sample.index, len(sample.rows)
            wanted = [listener for listener in self.listeners if listener.wants(step, steps)]
            if not wanted:
                return
            event = {"step": step, "steps": steps}
            preview = (preview_png(sample.state.x0, self.size)
                       if any(listener.preview for listener in wanted) else None)
            for listener in wanted:
                self.loop.call_soon_threadsafe(listener.push, {**event, "preview": preview} if listener.preview
                                               else event)
        except RuntimeError:  # the loop closed: the server is exiting
            pass
        except Exception as exc:
            log.error("ddpg serve: job %s: its step event failed: %s", self.id, exc, exc_info=True)


class JobStore:
    """The server's jobs by id, bounded: unfinished ones by the scheduler's queue and batch, finished ones by
    ``ttl_s`` after their end and ``max_jobs``."""

    def __init__(self, scheduler: Scheduler, metrics, prior: str, *, ttl_s: float, max_jobs: int):
        self.scheduler, self.metrics, self.prior = scheduler, metrics, prior
        self.ttl_s, self.max_jobs = ttl_s, max_jobs
        self.jobs: dict[str, Job] = {}
        self._timer: asyncio.TimerHandle | None = None

    def submit(self, prepared: Prepared, arrived: float, kept: bool) -> Job:
        """Queue a prepared request as a job (QueueFull/Draining as the scheduler's submit)."""
        job = Job(secrets.token_urlsafe(16), prepared, asyncio.get_running_loop(), arrived, time.monotonic(), kept)
        prepared.sample.on_step = job.on_step
        self.scheduler.submit(prepared.sample)
        self.jobs[job.id] = job
        self.metrics.jobs.set(len(self.jobs))
        job.follower = asyncio.ensure_future(self._follow(job))
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def status(self, job: Job) -> dict:
        """The job's status body (docs/jobs.md §3)."""
        (step, admitted), settings = job.progress(), job.settings
        end = job.finished or time.monotonic()
        started = min(admitted, end) if admitted else None
        timings = {"queued_s": (started or end) - job.submitted, "running_s": end - started if started else 0.0,
                   "total_s": end - job.arrived}
        state = job.state
        return {"id": job.id, "state": state,
                "position": self.scheduler.position(job.prepared.sample) if state == "queued" else None,
                "step": step, "steps": job.steps, "error": job.error,
                "settings": {"task": settings.task, "method": settings.method, "prior": self.prior,
                             "sigma_y": settings.sigma_y, "steps": settings.steps},
                "timings": {name: round(max(0.0, value), 4) for name, value in timings.items()},
                "created": round(job.created, 3)}

    def cancel(self, job: Job, reason: str, status: int) -> None:
        """End an unfinished job as cancelled: a queued sample leaves the queue at once, an active one the
        engine's batch at the next step; its error is ``reason`` with ``status``."""
        if job.outcome is None:
            self.scheduler.cancel(job.prepared.sample, reason)
            self._finish(job, "cancelled", {**error_body(reason), "status": status})

    def remove(self, job: Job) -> None:
        """Forget a job and delete its folder (cancelling it first if unfinished)."""
        self.cancel(job, "the job was deleted", 409)
        self.jobs.pop(job.id, None)
        remove_workdir(job.workdir)
        self.metrics.jobs.set(len(self.jobs))

    def sweep(self) -> None:
        """Remove the finished jobs kept longer than ``ttl_s``, then the oldest beyond ``max_jobs``; sweep again
        when the oldest left expires."""
        now = time.monotonic()
        finished = sorted((job for job in self.jobs.values() if job.kept and job.finished is not None),
                          key=lambda job: job.finished)
        excess = len(finished) - self.max_jobs
        for i, job in enumerate(finished):
            if i < excess or now - job.finished > self.ttl_s:
                self.remove(job)
        if self._timer is not None:
            self._timer.cancel()
        left = [job.finished for job in finished if job.id in self.jobs]
        self._timer = (asyncio.get_running_loop().call_later(left[0] + self.ttl_s - now + 0.01, self.sweep)
                       if left else None)

    def listen(self, job: Job, every: int, preview: bool) -> Listener:
        """A new listener of ``job`` (TooManyListeners past :data:`MAX_LISTENERS`); one of a finished job has
        its final event at once."""
        if len(job.listeners) >= MAX_LISTENERS:
            raise TooManyListeners(f"job {job.id} has {MAX_LISTENERS} listeners already, the most it takes")
        listener = Listener(every, preview)
        job.listeners = (*job.listeners, listener)
        if job.outcome is not None:
            listener.end(job.outcome, self.status(job))
        self.metrics.listeners.inc()
        return listener

    def unlisten(self, job: Job, listener: Listener) -> None:
        job.listeners = tuple(other for other in job.listeners if other is not listener)
        self.metrics.listeners.dec()

    async def _follow(self, job: Job) -> None:
        """Wait for the job's sample; write its result (``ddpg restore``'s writer) or record its failure."""
        prepared = job.prepared
        sample = prepared.sample
        try:
            out = await asyncio.wrap_future(sample.future)
            timing = {"queue_and_restore": round(time.monotonic() - job.submitted, 4),
                      "queue": round(job.seconds()["queue"], 4),
                      "mean_batch": round(sample.ticks_shared / max(1, len(sample.rows)), 3)}
            _, job.sidecar = await run_in_threadpool(write_result, prepared, out, timing)
        except Exception as exc:
            if job.outcome is None:
                status, body, _ = refusal(exc)
                self._finish(job, "failed", {**body, "status": status})
            return
        if job.outcome is None:
            self._finish(job, "done")
        else:  # cancelled or removed while its result was written
            remove_workdir(job.workdir)

    def _finish(self, job: Job, outcome: str, error: dict | None = None) -> None:
        """Record the job's end, tell its listeners and whoever waits on it; a failed or cancelled job's folder
        goes at once. A kept job's outcome is counted in the metrics (/v1/restore counts its own), and the
        finished jobs beyond ``max_jobs`` go."""
        job.outcome, job.error, job.finished = outcome, error, time.monotonic()
        job.release()
        if outcome != "done":
            remove_workdir(job.workdir)
        status = self.status(job)
        for listener in job.listeners:
            listener.end(outcome, status)
        if not job.ended.done():
            job.ended.set_result(outcome)
        if job.kept:
            self._count(job, outcome)
            self.sweep()

    def _count(self, job: Job, outcome: str) -> None:
        if outcome == "done":
            self.metrics.count("ok")
            self.metrics.latency.observe(job.finished - job.arrived)
            self.metrics.images.inc()
        else:
            self.metrics.count("cancelled" if outcome == "cancelled" else
                               OUTCOME_OF_STATUS.get(job.error["status"], "error"))
