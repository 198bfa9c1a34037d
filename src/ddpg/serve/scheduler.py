"""Step-level continuous batching: one engine loop per (prior, device) runs every restoration in flight.

Each :class:`Sample` carries its own step index, its own rows of its method's step table and its own seeded
noise stream. A tick runs one denoiser call over all active samples of an image size (padded to
``engine_batch`` rows when the engine needs a fixed batch), then the method's ``step`` — the step the eager
loop ``run_method`` calls — once per group of samples sharing a method, parameters and kind of operator, with
per-sample (B,1,1,1) rows (``stack_rows``; every forward-only method's step broadcasts them per sample), the
samples' operators stacked (``stack_operators``: each sample's own kernel or mask) and the state's ctx derived
for that operator (it holds only what the group shares, e.g. the operator's spectral view). New samples join at
the next tick boundary; finished, cancelled and overdue samples leave there, so a sample's result does not
depend on what else shared its ticks (bit for bit where the denoiser and operators are batch-invariant).

Policies (the same loop, for comparison): ``continuous`` (admit at every tick), ``request`` (request-level
batching: wait up to ``batch_wait_s`` to fill a batch, then run it to the end before admitting more) and
``single`` (one request at a time).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from ddpg.errors import DdpgError
from ddpg.models.denoiser import prediction_type
from ddpg.operators.base import Operator, stack_operators
from ddpg.runtime.restorer import seeded_start
from ddpg.runtime.samplers.common import NoiseSource, prepare
from ddpg.runtime.samplers.method import Method, State, method_grid, stack_rows
from ddpg.runtime.tiling import TileLayout, fill_batch
from ddpg.schedule import Schedule

POLICIES = ("continuous", "request", "single")


class ServeError(DdpgError):
    """A request the scheduler cannot take or finish; ``status`` is its HTTP status."""

    status = 500


class QueueFull(ServeError):
    status = 429

    def __init__(self, retry_after_s: int):
        super().__init__(f"the queue is full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Draining(ServeError):
    status = 503


class DeadlineExceeded(ServeError):
    status = 504


class Cancelled(ServeError):
    status = 499  # the client went away


@dataclass(eq=False)
class Sample:
    """One restoration in flight: its method's state (x_t (1,3,H,W) float32, …), y (1,C,h,w) float32, its
    step rows and noise."""

    state: State
    y: torch.Tensor
    operator: Operator
    method: Method
    params: object  # the method's params dataclass
    rows: list
    noise: NoiseSource
    schedule: Schedule
    group: Hashable  # samples with equal groups share one step call (same method, params and kind of operator)
    deadline: float | None = None  # time.monotonic() after which the sample is dropped
    future: Future = field(default_factory=Future)
    index: int = 0  # the next step
    ticks_shared: int = 0  # sum over its steps of the samples in the same denoiser call
    admitted: float = 0.0  # time.monotonic() when it joined the engine's batch
    stacked: tuple | None = None  # (members, operator, ctx) of the last group it led with other operators
    layout: TileLayout | None = None  # its UNet input as tiles (an image larger than the prior): see ``advance``
    on_step: Callable[[Sample], None] | None = None  # called in the engine thread after each of its steps

    @property
    def x(self) -> torch.Tensor:
        return self.state.x

    @property
    def result(self) -> torch.Tensor:
        """The restoration (3,H,W) float32, [-1, 1] scale (the method's ``result``)."""
        return self.method.result(self.state, self.params)[0]


def start_sample(denoiser, operator: Operator, y: torch.Tensor, method: Method, params, steps: int, seed: int,
                 group: Hashable, deadline: float | None = None, layout: TileLayout | None = None) -> Sample:
    """A sample that replays ``Restorer.restore(y, [seed])`` of ``method`` with ``params``: the same x_T, step
    table and per-step noise (each drawn from the seed's sampling stream). ``y``: (1,C,h,w) on the denoiser's
    device; ``layout``: the tiles its UNet input is cut into (a ``TiledDenoiser``'s layout of its size), None for
    the whole image."""
    x_T, noise = seeded_start([seed], operator.img_size, y.device)
    schedule, y, x_T, noise = prepare(denoiser, operator, y, x_T, noise, None)
    rows = method.table(schedule, method_grid(method, schedule, steps), params)
    state = method.start(y, operator, params, x_T, schedule, rows)
    return Sample(state, y, operator, method, params, rows, noise, schedule, group, deadline, layout=layout)


class Scheduler:
    """The engine loop, in its own thread. ``submit`` returns the sample's future (result: (3,H,W) CPU)."""

    def __init__(self, denoiser, *, max_batch: int = 8, max_queue: int = 64, policy: str = "continuous",
                 batch_wait_s: float = 0.05, engine_batch: int | None = None, metrics=None):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if max_queue < 0:
            raise ValueError("need max_queue >= 0")
        self.denoiser, self.policy, self.metrics = denoiser, policy, metrics
        self.max_queue, self.batch_wait_s, self.engine_batch = max_queue, batch_wait_s, engine_batch
        self.queue: deque[tuple[float, Sample]] = deque()  # (arrival time, sample)
        self.active: list[Sample] = []
        self.draining = False
        self.tick_s = 0.0  # moving average of a tick's seconds
        self.request_s = 0.0  # moving average of a request's seconds from admission to result, for Retry-After
        self._cv = threading.Condition()
        self._paused = False
        self._hold_after: int | None = None  # ticks to run before holding again (the test hook's ``after``)
        self._stop = False
        self.set_max_batch(max_batch)
        self._thread = threading.Thread(target=self._loop, name="ddpg-engine", daemon=True)
        self._thread.start()

    # --- the client side ---------------------------------------------------------------------------------

    def submit(self, sample: Sample) -> Future:
        with self._cv:
            if self.draining or self._stop:
                raise Draining("the server is shutting down and admits no new requests")
            if len(self.queue) >= self.max_queue:
                raise QueueFull(self.retry_after_s())
            self.queue.append((time.monotonic(), sample))
            self._changed()
        return sample.future

    def cancel(self, sample: Sample, reason: str = "the client disconnected") -> None:
        """Free a sample's place (queued: at once; active: at the next tick boundary); its future fails with
        Cancelled(``reason``)."""
        with self._cv:
            for entry in self.queue:
                if entry[1] is sample:
                    self.queue.remove(entry)
                    break
            else:
                if sample in self.active:
                    self.active.remove(sample)
            self._fail(sample, Cancelled(reason))
            self._changed()

    def position(self, sample: Sample) -> int | None:
        """The sample's 1-based place in the queue; None once admitted (or never queued)."""
        with self._cv:
            return next((i for i, (_, s) in enumerate(self.queue, 1) if s is sample), None)

    def retry_after_s(self) -> int:
        """Seconds until a request arriving now would likely start (at least 1): the requests ahead of it,
        queued and active, in batches of ``max_batch``, each batch a recent request's length (before any has
        finished: the recent tick's length times their steps)."""
        with self._cv:
            ahead = [s for _, s in self.queue] + self.active
            seconds = self.request_s or self.tick_s * max((len(s.rows) for s in ahead), default=0)
            return max(1, math.ceil(len(ahead) / self.max_batch * seconds))

    def set_max_batch(self, max_batch: int) -> None:
        """Set the most samples per tick (at start, and ``--max-batch auto`` once it has chosen); from the next
        admission."""
        if max_batch < 1 or (self.engine_batch is not None and self.engine_batch < max_batch):
            raise ValueError("need max_batch >= 1 and engine_batch >= max_batch")
        with self._cv:
            self.max_batch = 1 if self.policy == "single" else max_batch
            self._changed()

    def pause(self, paused: bool, after: int | None = None) -> None:
        """Hold the loop at the next tick boundary (while ``--max-batch auto`` profiles; test hook: makes queue
        states reproducible), or with ``after`` once that many more ticks have run."""
        with self._cv:
            self._paused, self._hold_after = (False, after) if paused and after else (paused, None)
            self._cv.notify_all()

    def drain(self, timeout_s: float) -> bool:
        """Stop admitting; wait up to ``timeout_s`` for the queued and active samples to finish; True if all did."""
        end = time.monotonic() + timeout_s
        with self._cv:
            self.draining = True
            while self.queue or self.active:
                if not self._cv.wait(timeout=max(0.0, end - time.monotonic())) and time.monotonic() >= end:
                    return False
            return True

    def close(self) -> None:
        """Stop the loop; samples still queued or active fail with Draining."""
        with self._cv:
            self._stop = True
            for _, s in self.queue:
                self._fail(s, Draining("the server stopped before this request finished"))
            for s in self.active:
                self._fail(s, Draining("the server stopped before this request finished"))
            self.queue.clear()
            self.active.clear()
            self._changed()
        self._thread.join(timeout=30)

    # --- the engine side ---------------------------------------------------------------------------------

    def _changed(self) -> None:
        """Publish the queue state (callers hold the lock) and wake the loop and drain waiters."""
        if self.metrics is not None:
            self.metrics.set_depths(len(self.queue), len(self.active))
        self._cv.notify_all()

    @staticmethod
    def _fail(sample: Sample, exc: Exception) -> None:
        if not sample.future.done():
            sample.future.set_exception(exc)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (self._paused or not (self.queue or self.active)):
                    self._cv.wait()
                if self._stop:
                    return
                self._admit()
                self._drop_overdue()
                batch = list(self.active)
            if batch:
                self._tick(batch)
                self._count_down()

    def _count_down(self) -> None:
        """One tick of ``pause(True, after)`` done: hold once the last has run."""
        with self._cv:
            if self._hold_after is not None:
                self._hold_after -= 1
                self._paused = self._hold_after <= 0
                self._hold_after = None if self._paused else self._hold_after

    def _admit(self) -> None:
        """Move queued samples into the active set at this boundary, as the policy allows (holding the lock)."""
        if self.policy == "request":
            if self.active:
                return  # run the batch to its end
            while (self.queue and len(self.queue) < self.max_batch and not self._stop and not self._paused
                   and time.monotonic() < self.queue[0][0] + self.batch_wait_s):
                self._cv.wait(timeout=self.queue[0][0] + self.batch_wait_s - time.monotonic())
        while self.queue and len(self.active) < self.max_batch:
            self.active.append(self.queue.popleft()[1])
            self.active[-1].admitted = time.monotonic()
        self._changed()

    def _drop_overdue(self) -> None:
        now = time.monotonic()
        for where in (self.active, [s for _, s in self.queue]):
            for s in [s for s in where if s.deadline is not None and now > s.deadline]:
                self._fail(s, DeadlineExceeded("the request's deadline passed before its restoration finished"))
        self.active = [s for s in self.active if not s.future.done()]
        self.queue = deque(e for e in self.queue if not e[1].future.done())

    def _tick(self, batch: list[Sample]) -> None:
        """One step of every sample in ``batch``: a denoiser call per image size, a guidance call per group."""
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                advance(self.denoiser, batch, self.engine_batch)
        except (DdpgError, RuntimeError, ValueError) as exc:  # e.g. out of memory: these samples fail
            for s in batch:
                self._fail(s, ServeError(f"restoration failed: {exc}"))
        seconds = time.perf_counter() - t0
        self.tick_s = seconds if self.tick_s == 0 else 0.8 * self.tick_s + 0.2 * seconds
        for s in batch:  # before the results are set, so a job's last step is told before its end
            if s.on_step is not None and not s.future.done():
                s.on_step(s)
        with self._cv:
            for s in batch:
                if not s.future.done() and s.index == len(s.rows):
                    s.future.set_result(s.result.cpu())
                    took = time.monotonic() - s.admitted
                    self.request_s = took if self.request_s == 0 else 0.8 * self.request_s + 0.2 * took
            self.active = [s for s in self.active if not s.future.done()]
            self._changed()
        if self.metrics is not None:
            self.metrics.observe_tick(len(batch), seconds)

def advance(denoiser, samples: list[Sample], engine_batch: int | None = None) -> None:
    """One step of every sample (each at its own step index): the prior's outputs of every sample
    (:func:`unet_outputs`), then the method's ``step`` per group of one image size with per-sample rows and each
    sample's own z, on the whole images. Finished samples must have left ``samples``."""
    prediction = prediction_type(denoiser)
    outs, shared = unet_outputs(denoiser, samples, engine_batch)
    for same_size in _grouped(samples, lambda s: tuple(s.x.shape[-2:])):
        for members in _grouped(same_size, lambda s: s.group):
            first = members[0]
            rows = stack_rows([s.rows[s.index] for s in members], first.x.device)
            z = torch.cat([s.method.draw(s.noise, s.x, s.rows[s.index], s.params) for s in members])
            y = torch.cat([s.y for s in members])
            operator, ctx = group_operator(members, y)
            state = State(*(torch.cat([getattr(s.state, k) for s in members]) for k in ("x", "x0", "out")), ctx)
            new = first.method.step(state, torch.cat([outs[id(s)] for s in members]), rows, z, y, operator,
                                    first.params, prediction)
            for j, s in enumerate(members):
                s.state = s.state.advance(new.x[j:j + 1], new.x0[j:j + 1], new.out[j:j + 1])
                s.index += 1
                s.ticks_shared += shared[id(s)]


def unet_outputs(denoiser, samples: list[Sample], engine_batch: int | None = None
                 ) -> tuple[dict[int, torch.Tensor], dict[int, int]]:
    """({id(sample): its prior output (1,3,H,W)}, {id(sample): the samples in its denoiser call}): one denoiser
    call per input size, its rows every sample's input of that size — the whole x_t, or for a sample with a
    ``layout`` its tiles, which join the call as samples of their own and are blended back per sample
    (:class:`~ddpg.runtime.tiling.TileLayout`) — in calls of ``engine_batch`` rows when given (the last padded)."""
    inputs = [(s, s.x if s.layout is None else s.layout.cut(s.layout.pad(s.x), s.layout.items(1))) for s in samples]
    outs, shared = {}, {}
    for same in _grouped(inputs, lambda e: tuple(e[1].shape[-2:])):
        x = torch.cat([rows for _, rows in same])
        t = torch.cat([torch.full((len(rows),), float(s.rows[s.index].t), device=x.device) for s, rows in same])
        out = _call(denoiser, x, t, engine_batch)
        first = 0
        for s, rows in same:
            mine, first = out[first:first + len(rows)], first + len(rows)
            if s.layout is None:
                outs[id(s)] = mine
            else:
                blended = mine.new_zeros((1, mine.shape[1], *s.layout.padded))
                s.layout.blend(blended, mine, s.layout.items(1))
                outs[id(s)] = s.layout.crop(blended)
            shared[id(s)] = len(same)
    return outs, shared


def _call(denoiser, x: torch.Tensor, t: torch.Tensor, engine_batch: int | None) -> torch.Tensor:
    """``denoiser(x, t)`` float32, in calls of ``engine_batch`` rows when given (a fixed-batch engine: the last one
    padded with copies of its first row)."""
    if engine_batch is None:
        return denoiser(x, t).float()
    outs = []
    for first in range(0, x.shape[0], engine_batch):
        xs, ts = x[first:first + engine_batch], t[first:first + engine_batch]
        n = xs.shape[0]
        outs.append(denoiser(*fill_batch(xs, ts, engine_batch)).float()[:n])
    return torch.cat(outs)


def group_operator(members: list[Sample], y: torch.Tensor) -> tuple[Operator, object]:
    """(operator, ctx) a group's step runs with: the first sample's when all share its operator; else their
    stacked operator (sample i: member i's kernel or mask) and the ctx the method derives for it at its start,
    from the group's ``y`` — kept on the first sample while the group's members stay the same."""
    first = members[0]
    operator = stack_operators([s.operator for s in members])
    if operator is first.operator:
        return operator, first.state.ctx
    if first.stacked is None or first.stacked[0] != tuple(members):
        x = torch.cat([s.x for s in members])
        ctx = first.method.start(y, operator, first.params, x, first.schedule, first.rows).ctx
        first.stacked = (tuple(members), operator, ctx)
    return first.stacked[1], first.stacked[2]


def _grouped(samples: list[Sample], key) -> list[list[Sample]]:
    """``samples`` split by ``key``, groups in order of first appearance, members in order."""
    groups: dict = {}
    for s in samples:
        groups.setdefault(key(s), []).append(s)
    return list(groups.values())
