"""One value per default: a command-line option defaults to what its dataclass field (``RestoreRequest``,
``BenchConfig``, ``ServeOptions``) defaults to, and every entry point gives a method the same step count."""

import dataclasses
import inspect

import pytest
import torch
from typer.models import OptionInfo

from ddpg.api.request import RestoreRequest
from ddpg.api.sample import restore_sample
from ddpg.api.settings import resolve_settings
from ddpg.bench.harness import BenchConfig
from ddpg.checks import DEFAULT_SIGMA_Y
from ddpg.cli.bench import bench_command
from ddpg.cli.main import degrade as degrade_command
from ddpg.cli.main import restore as restore_command
from ddpg.cli.serve import serve_command
from ddpg.models import as_denoiser, load_prior
from ddpg.operators import degrade, make_operator
from ddpg.operators.observation import noise_std
from ddpg.runtime import Restorer
from ddpg.runtime.graph_runner import GraphRunner
from ddpg.runtime.samplers import FORWARD_METHODS, SAMPLERS
from ddpg.runtime.samplers.ddpg import DDPGParams
from ddpg.serve.server import ServeOptions

# option name → field name where the command line spells it otherwise
RENAMED = {"request_timeout": "request_timeout_s", "drain_timeout": "drain_timeout_s"}
# options whose None means "the field's default", resolved where the request is built
NONE_MEANS_FIELD_DEFAULT = {(restore_command, "max_pixels")}


def option_defaults(command) -> dict:
    """{field name: the option's default} of a Typer command's options."""
    return {RENAMED.get(name, name): p.default.default for name, p in inspect.signature(command).parameters.items()
            if isinstance(p.default, OptionInfo)}


def field_defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


@pytest.mark.parametrize("command, cls", [(restore_command, RestoreRequest), (bench_command, BenchConfig),
                                          (serve_command, ServeOptions)],
                         ids=["restore", "bench", "serve"])
def test_every_option_defaults_to_its_dataclass_field(command, cls):
    options, fields = option_defaults(command), field_defaults(cls)
    shared = sorted(set(options) & set(fields))
    assert len(shared) >= 10, shared  # the commands set most of their dataclass's fields
    differ = {name: (options[name], fields[name]) for name in shared
              if (command, name) not in NONE_MEANS_FIELD_DEFAULT and str(options[name]) != str(fields[name])}
    assert not differ, f"option default != dataclass default: {differ}"


@pytest.mark.parametrize("method", FORWARD_METHODS)
def test_restorer_and_graph_runner_default_to_the_methods_step_count(method):
    op = make_operator("sr4", 32)
    denoiser = as_denoiser(load_prior("gaussian"))
    expected = SAMPLERS[method].default_steps
    assert Restorer(denoiser, op, method=method).steps == expected
    assert GraphRunner(denoiser, op, method=method, cuda_graph=False, device=torch.device("cpu")).steps == expected


def test_every_default_sigma_y_is_the_one_constant():
    settings = resolve_settings("denoise", "ddpg", None, "gaussian", None, None)
    assert settings.preset is None and settings.sigma_y == DEFAULT_SIGMA_Y
    assert option_defaults(degrade_command)["sigma_y"] == DEFAULT_SIGMA_Y
    assert option_defaults(bench_command)["sigma_y"] == BenchConfig().sigma_y == DEFAULT_SIGMA_Y
    assert inspect.signature(restore_sample).parameters["sigma_y"].default == DEFAULT_SIGMA_Y


@pytest.mark.parametrize("sigma_y", [0.0, 0.025, 0.05, 0.3])
def test_the_observation_and_the_samplers_share_one_noise_std(sigma_y):
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    op = make_operator("sr4", 16)
    y = degrade(x, op, sigma_y, seed=3)
    n = torch.randn(op.A(x).shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(y, op.A(x) + noise_std(sigma_y) * n)
    assert noise_std(sigma_y) == 2 * sigma_y and DDPGParams(sigma_y=sigma_y).sigma == noise_std(sigma_y)
