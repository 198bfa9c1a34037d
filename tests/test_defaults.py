"""One value per default: each command-line option of ``restore``, ``bench`` and ``serve`` is an option field of
its dataclass (``RestoreRequest``, ``BenchConfig``, ``ServeOptions``: default, help and flags written once),
``ddpg serve`` takes the request fields marked as served, every default σ_y is the one constant, one function
holds the 2·σ_y noise convention, and every entry point gives a method the same step count."""

import dataclasses
import inspect

import pytest
import torch
from typer.models import OptionInfo

from ddpg.api.request import RestoreRequest
from ddpg.api.sample import restore_sample
from ddpg.api.settings import resolve_settings
from ddpg.bench.config import BenchConfig
from ddpg.checks import DEFAULT_SIGMA_Y
from ddpg.cli.bench import bench_command, parse_batches
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
from ddpg.schema import OPTION
from ddpg.serve.jobs import FIELDS
from ddpg.serve.options import ServeOptions

# the parameters a command has beyond its dataclass's option fields (bench's CPU-engine comparison is a mode of
# the command with its own settings, not a BenchConfig)
COMMAND_OWN = {"restore": {"inputs", "sample", "quiet"},
               "bench": {"batch", "json_path", "compare_cpu_engines", "ir", "rounds"}, "serve": {"quiet"}}
COMMANDS = {"restore": (restore_command, RestoreRequest), "bench": (bench_command, BenchConfig),
            "serve": (serve_command, ServeOptions)}


def option_defaults(command) -> dict:
    """{parameter name: the option's default} of a Typer command's options."""
    return {name: p.default.default for name, p in inspect.signature(command).parameters.items()
            if isinstance(p.default, OptionInfo)}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_its_dataclass_fields_default_help_and_flags(name):
    command, cls = COMMANDS[name]
    params = inspect.signature(command).parameters
    documented = {f.name: f for f in dataclasses.fields(cls) if OPTION in f.metadata}
    assert set(params) == set(documented) | COMMAND_OWN[name]
    for field_name, f in documented.items():
        option, doc = params[field_name].default, f.metadata[OPTION]
        default = f.default if f.default is not dataclasses.MISSING else ...
        assert (option.default, option.help, option.hidden) == (default, doc.help, doc.hidden), field_name
        assert option.param_decls == (doc.flags or ("--" + field_name.replace("_", "-"),)), field_name


def test_the_command_lines_own_options_default_to_the_dataclass():
    assert parse_batches(option_defaults(bench_command)["batch"]) == BenchConfig().batches
    assert option_defaults(restore_command)["quiet"] is option_defaults(serve_command)["quiet"] is False


def test_serve_takes_the_served_request_fields_with_their_types():
    served = {f.name for f in dataclasses.fields(RestoreRequest) if OPTION in f.metadata and f.metadata[OPTION].served}
    assert set(FIELDS) == served | {"response", "deadline_s"}
    assert {"operator", "hyper", "sigma_y", "mask"} <= served and not {"kernel", "prior", "device"} & served
    assert (FIELDS["operator"], FIELDS["sigma_y"], FIELDS["steps"], FIELDS["observed"]) == (dict, float, int, bool)


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
