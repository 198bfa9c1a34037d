"""The samplers' shared parts: x̂₀ and ε from a prior of any prediction type (ε, x̂₀ or v) — a reparametrised
Gaussian prior restores as its ε form does, in every method, the graph runner and the serve scheduler — and
time grids by name, so a method's table can be computed on another method's grid."""

import math

import numpy as np
import pytest
import torch

from ddpg.errors import ConfigError
from ddpg.models import as_denoiser, create_prior, prediction_type
from ddpg.operators import make_operator
from ddpg.runtime import Restorer
from ddpg.runtime.graph_runner import GraphRunner
from ddpg.runtime.samplers import FORWARD_METHODS, SAMPLERS
from ddpg.runtime.samplers.common import x0_and_eps
from ddpg.runtime.samplers.ddpg import DDPG, DDPGParams
from ddpg.runtime.samplers.diffpir import DiffPIR, DiffPIRParams
from ddpg.runtime.samplers.method import method_grid, run_method
from ddpg.schedule import Schedule, TimeGrid, linear_schedule, quad_timesteps, time_pairs
from ddpg.serve.scheduler import advance, start_sample

SIZE, STEPS = 16, 4


class Reparametrised(torch.nn.Module):
    """The Gaussian prior's exact ε re-expressed as ``prediction`` ("x0": x̂₀ = (x_t − √(1−a)ε)/√a; "v":
    √a·ε − √(1−a)·x̂₀), computed in float64 and returned in float32; its config says which."""

    def __init__(self, prior: torch.nn.Module, prediction: str):
        super().__init__()
        self.prior, self.prediction = prior, prediction
        self.config = {**prior.config, "prediction": prediction}
        abar = Schedule.from_config(prior.config).alphas_cumprod
        self.abar = torch.tensor(np.concatenate([[1.0], abar]), dtype=torch.float64)  # index t + 1 holds ᾱ_t

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        a = self.abar[t.long() + 1].view(-1, 1, 1, 1)
        eps, x = self.prior(x, t).double(), x.double()
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        return (x0 if self.prediction == "x0" else a.sqrt() * eps - (1 - a).sqrt() * x0).float()


@pytest.fixture(scope="module")
def prior():
    return create_prior("gaussian")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("prediction", ["epsilon", "x0", "v"])
def test_x0_and_eps_invert_each_prediction_type(prediction):
    g = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(2))
    a = 0.3
    x = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    out = {"epsilon": eps, "x0": x0, "v": math.sqrt(a) * eps - math.sqrt(1 - a) * x0}[prediction]
    got_x0, got_eps = x0_and_eps(x, out, math.sqrt(a), math.sqrt(1 - a), prediction)
    assert torch.allclose(got_x0, x0, atol=1e-12) and torch.allclose(got_eps, eps, atol=1e-12)


def test_an_unknown_prediction_type_is_refused(prior):
    assert prediction_type(prior) == "epsilon" and as_denoiser(Reparametrised(prior, "v")).prediction == "v"
    with pytest.raises(ConfigError, match=r"unknown prediction type 'score'.*epsilon, x0, v"):
        as_denoiser(Reparametrised(prior, "score"))
    with pytest.raises(ConfigError, match="unknown prediction type 'score'"):
        x0_and_eps(torch.zeros(1), torch.zeros(1), 0.5, 0.5, "score")


@pytest.mark.parametrize("prediction", ["x0", "v"])
@pytest.mark.parametrize("method", list(SAMPLERS))
def test_every_method_restores_the_same_from_any_prediction_type(prior, method, prediction):
    """Every method (and, for the forward-only ones, the graph runner bit for bit with the loop) restores from
    the x̂₀- or v-form of the Gaussian prior what it restores from its ε-form, to float32 rounding."""
    op = make_operator("deblur_gauss", SIZE, impl="fft")
    reference = Restorer(as_denoiser(prior), op, method=method, sigma_y=0.05, steps=STEPS)
    y = reference.degrade(prior.sample(2, SIZE, generator=torch.Generator().manual_seed(0)), [0, 1])
    other = Restorer(as_denoiser(Reparametrised(prior, prediction)), op, method=method, sigma_y=0.05, steps=STEPS)
    got = other.restore(y, [3, 4])
    assert rel(got, reference.restore(y, [3, 4])) < 1e-5
    if method in FORWARD_METHODS:
        assert torch.equal(GraphRunner.from_restorer(other).restore(y, [3, 4]), got)


@pytest.mark.parametrize("method", FORWARD_METHODS)
def test_the_serve_scheduler_steps_a_v_prior_as_the_loop_does(prior, method):
    denoiser = as_denoiser(Reparametrised(prior, "v"))
    r = Restorer(denoiser, make_operator("sr4", SIZE, impl="svd"), method=method, sigma_y=0.05, steps=STEPS)
    y = r.degrade(prior.sample(1, SIZE, generator=torch.Generator().manual_seed(1)), [0])
    sample = start_sample(denoiser, r.operator, y, r.spec.method, r.params, STEPS, seed=5, group=method)
    with torch.no_grad():
        while sample.index < len(sample.rows):
            advance(denoiser, [sample])
    assert torch.equal(sample.result, r.restore(y, [5])[0])


def test_time_grids_by_name():
    assert TimeGrid.named("uniform", 100).pairs == time_pairs(100)
    assert TimeGrid.named("uniform", 4, 4).pairs == [(3, 2), (2, 1), (1, 0), (0, -1)]
    quad = TimeGrid.named("quad", 20)
    assert list(quad.timesteps) == quad_timesteps(20) and len(quad) == 20
    assert quad.pairs[0] == (999, 770) and quad.pairs[-1] == (0, -1)
    with pytest.raises(ConfigError, match="unknown time grid 'cosine'; choose one of uniform, quad"):
        TimeGrid.named("cosine", 10)
    with pytest.raises(ConfigError, match="the quad time grid needs 2 <= steps <= 1000, got 1"):
        TimeGrid.named("quad", 1)


class Recording:
    """The Gaussian prior's denoiser, recording the timestep of every call."""

    def __init__(self, prior):
        self.inner, self.seen = as_denoiser(prior), []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.seen.append(int(t[0]))
        return self.inner(x, t)


@pytest.mark.parametrize("method, params, own, other", [
    (DDPG(), DDPGParams(sigma_y=0.05), "uniform", "quad"),
    (DiffPIR(), DiffPIRParams(sigma_y=0.05), "quad", "uniform"),
])
def test_a_method_runs_on_its_own_grid_or_on_another_by_name(prior, method, params, own, other):
    """DDPG on DiffPIR's quad grid (and DiffPIR on the uniform one) is the ``grid`` parameter of the loop: the
    denoiser sees exactly that grid's timesteps."""
    op = make_operator("sr4", SIZE, impl="svd")
    y = op.A(prior.sample(1, SIZE, generator=torch.Generator().manual_seed(2)))
    for grid in (None, other):
        denoiser = Recording(prior)
        out = run_method(method, params, denoiser, op, y, 10, generator=torch.Generator().manual_seed(0), grid=grid)
        assert torch.isfinite(out).all()
        assert denoiser.seen == list(TimeGrid.named(grid or own, 10).timesteps)


def test_diffpir_starts_at_the_first_timestep_of_its_grid(prior):
    """SR start: x = √ᾱ_{t₀}·bicubic(y) + √(1−ᾱ_{t₀})·z at the grid's first t₀ (10 steps: 999 on its own grid,
    900 on the uniform one)."""
    op = make_operator("sr4", SIZE, impl="svd")
    y = op.A(prior.sample(1, SIZE, generator=torch.Generator().manual_seed(3)))
    z = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    schedule, p, method = linear_schedule(), DiffPIRParams(sigma_y=0.05), DiffPIR()
    up = torch.nn.functional.interpolate(y, size=(SIZE, SIZE), mode="bicubic", align_corners=False)
    for grid, t0 in ((None, 999), ("uniform", 900)):
        rows = method.table(schedule, method_grid(method, schedule, 10, grid), p)
        a = schedule.alpha_bar(t0)
        expected = math.sqrt(a) * up + math.sqrt(1 - a) * z
        assert torch.allclose(method.start(y, op, p, z, schedule, rows).x, expected, atol=1e-6)
