"""Scheduler samples for the serve scheduler's tests (test_serve_scheduler, test_serve_batch_size): the Gaussian
prior's denoiser, a denoiser that records its calls, and a DDPG SR×4 sample of a zero image."""

from __future__ import annotations

import torch

from ddpg.models import as_denoiser, create_prior
from ddpg.operators import make_operator
from ddpg.runtime.samplers import get_sampler
from ddpg.serve.scheduler import start_sample

SIZE, STEPS = 32, 8


def gaussian():
    """The analytic Gaussian prior's denoiser (batch-invariant: a sample equals its twin bit for bit)."""
    return as_denoiser(create_prior("gaussian"))


class Recording:
    """A denoiser that records each call's batch size and runs ``hook(call_index)`` before it."""

    def __init__(self, inner, hook=None):
        self.inner, self.hook, self.sizes = inner, hook, []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, x, t):
        if self.hook is not None:
            self.hook(len(self.sizes))
        self.sizes.append(x.shape[0])
        return self.inner(x, t)


SR4 = make_operator("sr_bicubic", SIZE, scale=4)  # one operator: samples of one group share it or stack theirs


def sample_of(denoiser, seed: int, steps: int = STEPS, deadline: float | None = None):
    """A DDPG SR×4 sample (σ_y 0.05) of a zero ``SIZE``-px image, started for the scheduler."""
    op = SR4
    y = op.A(torch.zeros(1, 3, SIZE, SIZE))
    spec = get_sampler("ddpg")
    return start_sample(denoiser, op, y, spec.method, spec.build(0.05), steps, seed, "sr4", deadline)
