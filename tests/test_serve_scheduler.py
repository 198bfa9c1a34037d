"""The serve scheduler in-process: samples admitted at different steps, with different seeds, tasks, σ_y and
methods, share denoiser calls and each still equals its ``Restorer.restore`` twin (bit for bit with the
batch-invariant Gaussian prior; within a float32 tolerance with a small UNet); policies, queue bound,
cancellation and deadlines."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import rel_err
from ddpg.models import as_denoiser, create_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer
from ddpg.runtime.samplers import get_sampler
from ddpg.runtime.samplers.method import State, stack_rows
from ddpg.schedule import TimeGrid, linear_schedule
from ddpg.serve.scheduler import Cancelled, DeadlineExceeded, QueueFull, Scheduler, advance, start_sample
from scheduler_samples import SIZE, STEPS, Recording, gaussian, sample_of

FIXTURES = Path(__file__).parent / "fixtures"
# (operator, σ_y, seed, method, the tick it joins at)
JOBS = [(("sr_bicubic", {"scale": 4}), 0.05, 3, "ddpg", 0), (("deblur_gauss", {}), 0.0, 7, "ddpg", 2),
        (("sr_bicubic", {"scale": 4}), 0.05, 11, "ddpg", 3), (("sr_bicubic", {"scale": 4}), 0.1, 5, "idpg", 5),
        (("inpainting", {}), 0.02, 2, "idpg", 5)]
# the other forward-only methods, two samples each at different steps of one shared step call
PEER_JOBS = [(("deblur_gauss", {}), 0.05, 4, "ddnm", 0), (("deblur_gauss", {}), 0.05, 9, "ddnm", 3),
             (("deblur_gauss", {}), 0.05, 6, "diffpir", 1), (("deblur_gauss", {}), 0.05, 8, "diffpir", 4),
             (("deblur_gauss", {}), 0.0, 1, "ddrm", 0), (("deblur_gauss", {}), 0.0, 12, "ddrm", 2)]


def small_unet():
    fixture = torch.load(FIXTURES / "priors" / "ddpm_small.pt", weights_only=True)
    prior = create_prior(fixture["config"])
    prior.load_state_dict(fixture["state_dict"])
    return as_denoiser(prior.eval())


def twins_and_samples(denoiser, jobs=JOBS):
    """Each job's restoration by the Restorer alone, and its sample (with the join tick)."""
    ops = {}
    clean = torch.rand(len(jobs), 3, SIZE, SIZE) * 2 - 1
    twins, samples = [], []
    for i, ((name, params), sigma_y, seed, method, start) in enumerate(jobs):
        op = ops.setdefault(name, make_operator(name, SIZE, **params))
        r = Restorer(denoiser, op, method=method, sigma_y=sigma_y, steps=STEPS)
        y = r.degrade(clean[i:i + 1], [seed])
        with torch.no_grad():
            twins.append(r.restore(y, [seed])[0])
        spec = get_sampler(method)
        p = spec.build(sigma_y)
        samples.append((start, start_sample(denoiser, op, y, spec.method, p, STEPS, seed, (name, p))))
    return twins, samples


def run_staggered(denoiser, samples) -> list[int]:
    """Advance the samples tick by tick, each joining at its tick and leaving when done; the batch sizes."""
    active, sizes, tick = [], [], 0
    with torch.no_grad():
        while any(s.index < len(s.rows) for _, s in samples):
            active += [s for start, s in samples if start == tick]
            if active:
                sizes.append(len(active))
                advance(denoiser, active)
            active = [s for s in active if s.index < len(s.rows)]
            tick += 1
    return sizes


def test_staggered_samples_equal_their_lone_restorations_bit_for_bit():
    denoiser = gaussian()
    twins, samples = twins_and_samples(denoiser)
    sizes = run_staggered(denoiser, samples)
    assert max(sizes) == len(JOBS) and sizes[0] == 1  # they did share ticks, at different step indices
    for (_, s), twin in zip(samples, twins, strict=True):
        assert torch.equal(s.result, twin)


def test_ddnm_diffpir_and_ddrm_samples_at_different_steps_equal_their_lone_restorations():
    """Each pair shares its step call (same method, operator and params) at different step indices, DiffPIR's
    pair across its last step (go = 0 for one sample only); bit for bit with the Gaussian prior."""
    denoiser = gaussian()
    twins, samples = twins_and_samples(denoiser, PEER_JOBS)
    sizes = run_staggered(denoiser, samples)
    assert max(sizes) == len(PEER_JOBS)
    for (_, s), twin, job in zip(samples, twins, PEER_JOBS, strict=True):
        assert torch.equal(s.result, twin), job


def test_staggered_samples_with_a_unet_match_within_tolerance():
    """A UNet's convolutions need not be batch-invariant: agreement to float32 rounding (relative L2 error
    below 1e-5; the outputs are not clamped)."""
    denoiser = small_unet()
    twins, samples = twins_and_samples(denoiser)
    run_staggered(denoiser, samples)
    for (_, s), twin in zip(samples, twins, strict=True):
        assert rel_err(s.result, twin) < 1e-5


def test_per_sample_scalars_give_each_row_the_bits_of_its_own_step():
    op = make_operator("sr_bicubic", SIZE, scale=4)
    spec = get_sampler("ddpg")
    p = spec.build(0.05)
    rows = spec.method.table(linear_schedule(), TimeGrid.named("uniform", 10), p)
    picked = [rows[0], rows[4], rows[9]]  # includes the last step (δ = 1)
    x, eps, z = (torch.randn(3, 3, SIZE, SIZE) for _ in range(3))
    y = op.A(torch.randn(3, 3, SIZE, SIZE))
    together = spec.method.step(State(x, x, x), eps, stack_rows(picked), z, y, op, p, "epsilon")
    for i, k in enumerate(picked):
        xi = x[i:i + 1]
        alone = spec.method.step(State(xi, xi, xi), eps[i:i + 1], k, z[i:i + 1], y[i:i + 1], op, p, "epsilon")
        for name in ("x", "x0", "out"):
            assert torch.equal(getattr(together, name)[i:i + 1], getattr(alone, name))


@pytest.mark.parametrize("policy, expected", [
    ("continuous", [1, 1, 1] + [2] * 5 + [1] * 3),  # B joins at the next boundary
    ("request", [1] * 8 + [1] * 8),  # B waits for A's batch to finish
])
def test_policies_admit_at_step_boundaries(policy, expected):
    denoiser = Recording(gaussian())
    scheduler = Scheduler(denoiser, max_batch=4, max_queue=4, policy=policy, batch_wait_s=0.0)
    late = sample_of(denoiser, 2)
    denoiser.hook = lambda call: scheduler.submit(late) if call == 2 else None  # arrives during A's 3rd step
    try:
        first = scheduler.submit(sample_of(denoiser, 1))
        assert first.result(timeout=60) is not None and late.future.result(timeout=60) is not None
    finally:
        scheduler.close()
    assert denoiser.sizes == expected


def test_full_queue_refuses_with_retry_after_and_cancel_frees_the_place():
    scheduler = Scheduler(gaussian(), max_batch=2, max_queue=1)
    scheduler.pause(True)
    try:
        queued = sample_of(scheduler.denoiser, 1)
        scheduler.submit(queued)
        with pytest.raises(QueueFull) as info:
            scheduler.submit(sample_of(scheduler.denoiser, 2))
        assert info.value.retry_after_s >= 1
        scheduler.cancel(queued)
        with pytest.raises(Cancelled):
            queued.future.result(timeout=0)
        kept = scheduler.submit(sample_of(scheduler.denoiser, 3))  # the place is free again
        scheduler.pause(False)
        assert kept.result(timeout=60).shape == (3, SIZE, SIZE)
    finally:
        scheduler.close()


def test_retry_after_counts_the_requests_ahead_at_their_recent_length():
    """Every denoiser call here takes at least 50 ms, so a request of 8 steps at least 0.4 s: with ten requests
    queued ahead at batch 1 a new one waits at least 4 s, and Retry-After says so (it said 1 s, one tick's
    length times the steps left of the active samples, none while the engine is held)."""
    denoiser = Recording(gaussian(), hook=lambda call: time.sleep(0.05))
    scheduler = Scheduler(denoiser, max_batch=1, max_queue=10)
    try:
        assert scheduler.submit(sample_of(denoiser, 1)).result(timeout=60) is not None
        scheduler.pause(True)
        for seed in range(10):
            scheduler.submit(sample_of(denoiser, seed))
        assert scheduler.retry_after_s() >= math.ceil(10 * STEPS * 0.05)
        with pytest.raises(QueueFull) as info:
            scheduler.submit(sample_of(denoiser, 11))
        assert info.value.retry_after_s == scheduler.retry_after_s()
    finally:
        scheduler.close()


def test_overdue_sample_leaves_at_the_boundary():
    scheduler = Scheduler(gaussian(), max_batch=2, max_queue=2)
    scheduler.pause(True)
    try:
        overdue = scheduler.submit(sample_of(scheduler.denoiser, 1, deadline=time.monotonic()))
        on_time = scheduler.submit(sample_of(scheduler.denoiser, 2, deadline=time.monotonic() + 3600))
        scheduler.pause(False)
        with pytest.raises(DeadlineExceeded):
            overdue.result(timeout=60)
        assert on_time.result(timeout=60) is not None
    finally:
        scheduler.close()


def test_drain_finishes_work_in_flight_and_refuses_new():
    scheduler = Scheduler(gaussian(), max_batch=2, max_queue=4)
    scheduler.pause(True)
    futures = [scheduler.submit(sample_of(scheduler.denoiser, s)) for s in (1, 2, 3)]
    done = threading.Event()
    result = {}

    def drain():
        result["ok"] = scheduler.drain(600)
        done.set()

    threading.Thread(target=drain).start()
    while not scheduler.draining:  # the drain thread has taken the lock and set the flag
        time.sleep(0.01)
    with pytest.raises(Exception, match="shutting down"):
        scheduler.submit(sample_of(scheduler.denoiser, 4))
    scheduler.pause(False)
    assert done.wait(600) and result["ok"]
    assert all(f.done() and f.exception() is None for f in futures)
    scheduler.close()
