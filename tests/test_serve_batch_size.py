"""``--max-batch auto`` and the engine's batch limits: the choice rule on given profiles, the profiling loop's
stops (on synthetic call costs: no test depends on this machine's speed), the options checked against an
engine's batch profile, and the scheduler taking a new batch at the next admission."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ddpg.engine_metadata import BatchProfile
from ddpg.errors import ConfigError
from ddpg.serve import batch_size
from ddpg.serve.batch_size import AUTO_CAP, choose_batch, profile_batches
from ddpg.serve.scheduler import Scheduler
from ddpg.serve.server import engine_batches, parse_max_batch
from scheduler_samples import Recording, gaussian, sample_of


@pytest.mark.parametrize("seconds, chosen", [
    ({1: 1.0}, 1),
    ({1: 1.0, 2: 2.0, 4: 4.0}, 1),  # linear cost: batching does not pay
    ({1: 1.0, 2: 1.0, 4: 1.2, 8: 2.4}, 4),  # flat, then linear: 4 and 8 give the same images/s
    ({1: 1.0, 2: 1.0, 4: 1.0, 8: 1.0}, 8),  # flat to the end of the profile
    ({1: 1.0, 2: 0.5, 4: 1.1, 8: 0.5}, 8),  # a slow reading at 4 does not hide a better 8
    ({1: 1.0, 2: 0.52, 4: 1.0, 8: 2.1}, 2),  # a plateau within the tolerance: its smallest batch
])
def test_choose_batch_takes_the_smallest_batch_near_the_best_images_per_s(seconds, chosen):
    assert choose_batch(seconds) == chosen


def test_choose_batch_tolerance_is_inclusive_and_an_empty_profile_is_refused():
    assert choose_batch({1: 1.0, 2: 1.0}, tolerance=0.5) == 1  # 1 image/s is exactly half the best 2
    assert choose_batch({1: 1.0, 2: 1.0}, tolerance=0.25) == 2
    with pytest.raises(ValueError):
        choose_batch({})


def synthetic(monkeypatch, cost, oom_from: int | None = None) -> list[int]:
    """Replace the timed call by ``cost(batch)`` seconds (out of memory from ``oom_from``); the batches asked."""
    asked = []

    def fake(denoiser, batch, image_size, device, repeats):
        asked.append(batch)
        if oom_from is not None and batch >= oom_from:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return cost(batch)

    monkeypatch.setattr(batch_size, "time_call", fake)
    return asked


def test_profile_stops_after_two_doublings_that_do_not_pay(monkeypatch):
    asked = synthetic(monkeypatch, lambda b: 1.0 if b <= 4 else b / 4)
    seconds = profile_batches(None, 64, "cpu")
    assert asked == [1, 2, 4, 8, 16] and list(seconds) == asked and choose_batch(seconds) == 4
    asked = synthetic(monkeypatch, lambda b: 0.1 * b)  # linear: 2 and 4 do not pay
    assert choose_batch(profile_batches(None, 64, "cpu")) == 1 and asked == [1, 2, 4]


def test_one_slow_doubling_does_not_stop_the_profile(monkeypatch):
    asked = synthetic(monkeypatch, {1: 1.0, 2: 1.0, 4: 4.0, 8: 1.0, 16: 16.0, 32: 32.0}.get)
    assert choose_batch(profile_batches(None, 64, "cpu")) == 8 and asked == [1, 2, 4, 8, 16, 32]


def test_profile_stops_at_its_cap_and_before_a_batch_that_does_not_fit(monkeypatch):
    asked = synthetic(monkeypatch, lambda b: 1.0)
    assert choose_batch(profile_batches(None, 64, "cpu")) == AUTO_CAP and asked[-1] == AUTO_CAP
    asked = synthetic(monkeypatch, lambda b: 1.0)
    assert choose_batch(profile_batches(None, 64, "cpu", cap=6)) == 4 and asked == [1, 2, 4]  # 8 is over the cap
    asked = synthetic(monkeypatch, lambda b: 1.0, oom_from=16)
    seconds = profile_batches(None, 64, "cpu")
    assert asked == [1, 2, 4, 8, 16] and list(seconds) == [1, 2, 4, 8] and choose_batch(seconds) == 8
    synthetic(monkeypatch, lambda b: 1.0, oom_from=1)
    with pytest.raises(torch.OutOfMemoryError):  # not even one sample fits: say so
        profile_batches(None, 64, "cpu")


def test_time_call_runs_the_denoiser_at_the_batch_once_untimed_then_repeats(monkeypatch):
    denoiser = Recording(gaussian())
    monkeypatch.setattr(batch_size, "MIN_SECONDS", 0.0)
    assert batch_size.time_call(denoiser, 3, 16, "cpu", repeats=2) >= 0 and denoiser.sizes == [3, 3, 3]


def test_time_call_times_at_least_min_seconds(monkeypatch):
    """A clock that advances 0.1 s per reading: each call takes 0.1 s, so 0.5 s needs five timed calls."""
    clock = iter(0.1 * i for i in range(1000))
    monkeypatch.setattr(batch_size.time, "perf_counter", lambda: next(clock))
    denoiser = Recording(gaussian())
    assert batch_size.time_call(denoiser, 2, 16, "cpu", repeats=2) == pytest.approx(0.1)
    assert len(denoiser.sizes) == 1 + 5


@pytest.mark.parametrize("value, parsed", [("auto", None), ("AUTO", None), ("4", 4), (2, 2)])
def test_parse_max_batch(value, parsed):
    assert parse_max_batch(value) == parsed


@pytest.mark.parametrize("value", ["0", "-3", "many", "2.5", ""])
def test_bad_max_batch_names_the_flag(value):
    with pytest.raises(ConfigError, match="--max-batch"):
        parse_max_batch(value)


def engine(profile: str) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(batch=BatchProfile.parse(profile)))


TORCH_PRIOR = SimpleNamespace(info=None)  # a PyTorch prior: no engine, so no batch profile


@pytest.mark.parametrize("denoiser, max_batch, engine_batch, expected", [
    (TORCH_PRIOR, 8, None, (8, None)),  # a PyTorch prior: as given
    (TORCH_PRIOR, None, None, (AUTO_CAP, None)),  # auto may choose up to its cap
    (TORCH_PRIOR, None, 4, (4, 4)),  # padded calls all cost the same: auto takes the engine batch
    (engine("1:4:16"), None, None, (16, None)),  # auto up to the engine's largest batch
    (engine("1:4:16"), 16, None, (16, None)),
    (engine("8"), None, None, (8, 8)),  # a fixed-batch engine pads every call to its batch
    (engine("8"), 3, None, (3, 8)),
    (engine("2:4:16"), 3, 4, (3, 4)),  # padded to 4, within the profile
])
def test_engine_batches(denoiser, max_batch, engine_batch, expected):
    assert engine_batches(denoiser, max_batch, engine_batch) == expected


@pytest.mark.parametrize("denoiser, max_batch, engine_batch, flag", [
    (engine("1:4:16"), 32, None, "--max-batch 32"),
    (engine("8"), None, 4, "--engine-batch 4"),
    (engine("2:4:16"), 4, None, "give --engine-batch between 2 and 16"),  # a lone sample's call would fail
    (engine("1:4:16"), 4, 32, "--engine-batch 32"),
    (TORCH_PRIOR, 8, 4, "--engine-batch 4 is below --max-batch 8"),
])
def test_options_outside_the_engines_batches_are_refused(denoiser, max_batch, engine_batch, flag):
    with pytest.raises(ConfigError, match=flag):
        engine_batches(denoiser, max_batch, engine_batch)


def test_scheduler_takes_a_new_max_batch_at_the_next_admission():
    denoiser = Recording(gaussian())
    scheduler = Scheduler(denoiser, max_batch=4, max_queue=8)
    scheduler.pause(True)
    try:
        scheduler.set_max_batch(2)
        futures = [scheduler.submit(sample_of(denoiser, seed, steps=3)) for seed in (1, 2, 3)]
        scheduler.pause(False)
        for f in futures:
            f.result(timeout=60)
        assert denoiser.sizes == [2, 2, 2, 1, 1, 1]
        with pytest.raises(ValueError):
            scheduler.set_max_batch(0)
    finally:
        scheduler.close()
    single = Scheduler(gaussian(), max_batch=4, policy="single")
    try:
        single.set_max_batch(8)
        assert single.max_batch == 1
    finally:
        single.close()
    padded = Scheduler(gaussian(), max_batch=2, engine_batch=4)
    try:
        with pytest.raises(ValueError):
            padded.set_max_batch(8)
    finally:
        padded.close()


def test_time_call_takes_the_fastest_call(monkeypatch):
    """Calls of 0.3, 0.1 and 0.2 s (a clock read before and after each): other work only adds time, so 0.1."""
    clock = iter([0.0, 0.3, 1.0, 1.1, 2.0, 2.2])
    monkeypatch.setattr(batch_size.time, "perf_counter", lambda: next(clock))
    assert batch_size.time_call(Recording(gaussian()), 1, 16, "cpu", repeats=3) == pytest.approx(0.1)
