"""One value per default: a command-line option defaults to what its dataclass field (``RestoreRequest``,
``BenchConfig``, ``ServeOptions``) defaults to, and every entry point gives a method the same step count."""

import dataclasses
import inspect

import pytest
import torch
from typer.models import OptionInfo

from ddpg.api.request import RestoreRequest
from ddpg.bench.harness import BenchConfig
from ddpg.cli.bench import bench_command
from ddpg.cli.main import restore as restore_command
from ddpg.cli.serve import serve_command
from ddpg.models import as_denoiser, load_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer
from ddpg.runtime.graph_runner import GraphRunner
from ddpg.runtime.samplers import FORWARD_METHODS, SAMPLERS
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
