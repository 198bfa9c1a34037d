"""The reference's recorded DDPG/IDPG runs (tests/fixtures/ddpg_runs: ε-model, operator, y, x_T and noise), loaded
for the tests that replay them (test_runtime_fixtures, test_fast_path)."""

import pytest
import torch

from conftest import FIXTURES
from ddpg.models import create_prior
from ddpg.operators import make_operator
from ddpg.runtime import linear_schedule
from fake_denoiser import FakeDenoiser

RUNS = sorted(p.name for p in (FIXTURES / "ddpg_runs").glob("*.pt"))
OPERATORS = {"sr4_fft": ("sr_bicubic", {"impl": "fft"}), "sr4_svd": ("sr_bicubic", {"impl": "svd"}),
             "deblur_gauss_fft": ("deblur_gauss", {})}


class OracleDenoiser(FakeDenoiser):
    """ε for x0 ~ N(0, S²I): √(1−ā)·x_t/(ā S² + 1 − ā), plus net_scale·tanh(net ε) when a small prior is named."""

    schedule = linear_schedule()

    def __init__(self, variance, net=None, net_scale=0.1):
        self.variance, self.net, self.net_scale = variance, net, net_scale
        self.abar = self.schedule.alpha_bar_tensor()

    def __call__(self, x, t):
        a = self.abar[t.long() + 1].view(-1, 1, 1, 1)
        eps = (1 - a).sqrt() * x / (a * self.variance + 1 - a)
        if self.net is not None:
            with torch.no_grad():
                eps = eps + self.net_scale * torch.tanh(self.net(x, t)[:, :3])
        return eps


RUN_PARAMS = [pytest.param(r, marks=pytest.mark.slow) if "adm" in r else r for r in RUNS]


def load_run(run: str):
    """(fixture dict, operator, oracle denoiser, y shaped as the operator's measurement) of one recorded run."""
    fx = torch.load(FIXTURES / "ddpg_runs" / run, weights_only=True)
    if fx["operator"] == "deblur_motion_fft":
        op = make_operator("deblur_motion", fx["img_size"], kernel=fx["kernel"])
    else:
        task, params = OPERATORS[fx["operator"]]
        op = make_operator(task, fx["img_size"], **params)
    net = None
    if "+" in fx["eps_model"]:
        small = torch.load(FIXTURES / "priors" / f"{fx['eps_model'].split('+')[1]}.pt", weights_only=True)
        net = create_prior(small["config"])
        net.load_state_dict(small["state_dict"], strict=True)
    den = OracleDenoiser(fx["oracle_data_variance"], net, fx["net_scale"])
    return fx, op, den, fx["y"].reshape(op.meas_shape(1))


def run_hyper(fx) -> dict:
    """The sampler keywords of a recorded run."""
    h = fx["hyper"]
    return {"steps": fx["T_sampling"], "gamma": h["gamma"], "zeta": h["zeta"], "eta_tilde": h["eta_tilde"],
            "step_size_mode": h["step_size_mode"], "inject_noise": bool(h["inject_noise"])}
