"""The restore request: every option typed and checked once on construction, errors that name the Python
parameter (never a flag) while the command line names the flag, and restore's own public steps (plan, prepare
one input, write its outputs) giving restore's bytes."""

import dataclasses
import hashlib
import inspect
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from ddpg import api
from ddpg.api.request import option_names
from ddpg.cli import main as cli
from ddpg.cli.flags import flag_message, flags_of
from ddpg.errors import DdpgError, ParameterError

runner = CliRunner()


@pytest.fixture
def folder(tmp_path):
    """Two 16×16 RGB images (different content) in ``tmp_path/in``."""
    path = tmp_path / "in"
    path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path / f"img{i}.png")
    return path


def digests(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.png"))}


def test_the_request_holds_every_option_of_restore_with_its_default(tmp_path):
    request = api.RestoreRequest(prior="gaussian", inputs=["a.png"], outdir=str(tmp_path))
    assert request.inputs == ("a.png",) and request.outdir == tmp_path
    assert (request.seed, request.batch_size, request.bits, request.backend) == (0, 1, 8, "torch")
    assert request.shard == (0, 1) and request.sigma_y is None and request.device == "cpu"
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.seed = 3
    with pytest.raises(TypeError):
        api.RestoreRequest(["a.png"], tmp_path, prior="gaussian")  # keywords only: no option is passed by position


@pytest.mark.parametrize("option, value, problem", [
    ("bits", 12, "must be 8 or 16"),
    ("batch_size", 0, "must be an integer >= 1"),
    ("seed", -1, "must be an integer >= 0"),
    ("seed", 1.5, "must be an integer >= 0"),
    ("max_pixels", 0, "must be an integer >= 1"),
    ("size", 0, "must be an integer >= 1"),
    ("steps", True, "must be an integer >= 1"),
    ("sigma_y", float("nan"), "must be a finite number in [0, 1]"),
    ("sigma_y", 2.0, "must be a finite number in [0, 1]"),
    ("device", "cuda:99", ""),
    ("device", "tpu", ""),
    ("precision", "fp8", "choose one of fp32"),
    ("cuda_graph", True, "needs a CUDA device"),
    ("shard", (2, 2), "must be (rank, world_size)"),
    ("hyper", ["zeta=1"], "must be a mapping"),
])
def test_a_bad_option_is_refused_on_construction_naming_the_parameter(tmp_path, option, value, problem):
    with pytest.raises(ParameterError) as caught:
        api.RestoreRequest(inputs=[tmp_path], outdir=tmp_path / "out", **{option: value})
    assert caught.value.param == option and problem in caught.value.problem
    assert str(caught.value).startswith(f"{option}=") and "--" not in str(caught.value)


@pytest.mark.parametrize("options, param", [
    ({"backend": "onnxruntime", "prior": "face64"}, "backend"),
    ({"prior": "gaussian", "checkpoint": "w.safetensors"}, "checkpoint"),
    ({"backend": "onnxruntime", "precision": "fp16"}, "precision"),
    ({"backend": "onnxruntime", "compile": True}, "compile"),
])
def test_options_that_contradict_each_other_are_refused_naming_one(tmp_path, options, param):
    with pytest.raises(ParameterError) as caught:
        api.RestoreRequest(inputs=[tmp_path], outdir=tmp_path / "out", **options)
    assert caught.value.param == param and "--" not in str(caught.value)


def test_unknown_options_are_named_all_at_once(folder, tmp_path):
    with pytest.raises(TypeError, match=r"unknown restore options sigma, stpes; known: task, preset"):
        api.restore([folder], tmp_path / "out", prior="gaussian", sigma=0.1, stpes=3)
    request = api.RestoreRequest(prior="gaussian", inputs=[folder], outdir=tmp_path / "out")
    with pytest.raises(TypeError, match="takes no other arguments"):
        api.restore(request, seed=3)
    assert not (tmp_path / "out").exists()


def test_options_the_plan_checks_name_their_parameter(folder, tmp_path):
    """What needs the resolved settings or the built denoiser is checked in the plan, still before any input."""
    cases = [({"resize": True}, "resize"), ({"steps": 2000}, "steps"), ({"preset": "ddpg/celeba_hq/sr4/0.05",
                                                                          "method": "idpg"}, "method"),
             ({"select_candidates": True, "method": "idpg"}, "select_candidates"), ({"hyper": {"lam": 2}}, "hyper"),
             ({"task": "denoise", "mask": "box"}, "mask")]
    for options, param in cases:
        with pytest.raises(ParameterError) as caught:
            api.restore([folder], tmp_path / "out", prior="gaussian", **options)
        assert caught.value.param == param and "--" not in str(caught.value), options
    assert not (tmp_path / "out").exists()


def test_restore_of_a_request_equals_restore_of_its_options(folder, tmp_path):
    options = {"prior": "gaussian", "task": "deblur_gauss", "steps": 3, "seed": 5, "batch_size": 2}
    assert api.restore([folder], tmp_path / "kw", **options).exit_code == 0
    request = api.RestoreRequest(inputs=[folder], outdir=tmp_path / "req", **options)
    assert api.restore(request).exit_code == 0
    assert api.restore_on_ranks(dataclasses.replace(request, outdir=tmp_path / "ranks")).exit_code == 0
    assert digests(tmp_path / "kw") == digests(tmp_path / "req") == digests(tmp_path / "ranks")
    assert len(digests(tmp_path / "kw")) == 4


def test_restores_public_steps_write_restores_own_outputs(folder, tmp_path):
    """plan_restore → prepare_input → the job's sampler → write_outputs (what ``ddpg serve`` runs) writes the
    bytes restore writes for the same input and seed."""
    options = {"prior": "gaussian", "task": "sr4", "steps": 3, "seed": 7}
    assert api.restore([folder / "img1.png"], tmp_path / "whole", **options).exit_code == 0
    plan = api.plan_restore(api.RestoreRequest(inputs=[folder / "img1.png"], outdir=tmp_path / "steps", **options))
    job = api.prepare_input(plan, 0, folder / "img1.png")
    assert job.seed == 7 and tuple(job.y.shape) == (1, 3, 4, 4)
    out = job.sampler(job.y, [job.seed])
    (tmp_path / "steps").mkdir()
    written = api.write_outputs(plan, job, out[0], {"restore_batch": 0.0})
    assert written == str(tmp_path / "steps" / "img1_restored.png")
    assert digests(tmp_path / "whole") == digests(tmp_path / "steps")


FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
REQUEST_VALUES = {
    "sigma_y": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2),
                         st.booleans(), st.text(max_size=2)),
    "steps": st.one_of(st.none(), st.integers(-3, 3), st.floats(0, 3)),
    "seed": st.one_of(st.integers(-3, 3), st.booleans(), st.floats(-1, 1)),
    "batch_size": st.integers(-2, 3),
    "bits": st.one_of(st.sampled_from([0, 8, 12, 16, -16]), st.floats(7, 17)),
    "size": st.one_of(st.none(), st.integers(-4, 64)),
    "max_pixels": st.integers(-10, 10**6),
    "device": st.sampled_from(["cpu", "cuda", "cuda:3", "meta:x", "", "tpu"]),
    "precision": st.sampled_from(["fp32", "fp16", "bf16", "fp8", ""]),
    "compile": st.booleans(),
    "cuda_graph": st.booleans(),
    "backend": st.sampled_from(["torch", "onnxruntime", "tensorrt"]),
    "prior": st.sampled_from([None, "gaussian", "face64"]),
    "checkpoint": st.sampled_from([None, "w.safetensors"]),
    "shard": st.one_of(st.tuples(st.integers(-1, 3), st.integers(-1, 3)), st.just([0, 1]), st.just((0, 1, 2))),
    "hyper": st.one_of(st.none(), st.just({"zeta": 0.3}), st.just("zeta=0.3")),
}


@FUZZ
@given(options=st.fixed_dictionaries({}, optional=REQUEST_VALUES))
def test_random_request_options_make_a_valid_request_or_a_parameter_error(tmp_path, options):
    """Any option values: a ParameterError naming one of the given options, or a request whose options satisfy
    every rule restore relies on."""
    try:
        request = api.RestoreRequest(inputs=[tmp_path], outdir=tmp_path / "out", **options)
    except ParameterError as exc:
        assert exc.param in options and "--" not in str(exc)
        return
    sigma = request.sigma_y
    assert sigma is None or (not isinstance(sigma, bool) and math.isfinite(sigma) and 0 <= sigma <= 1)
    for name, minimum in (("batch_size", 1), ("seed", 0), ("max_pixels", 1)):
        value = getattr(request, name)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    assert request.bits in (8, 16) and request.precision in ("fp32", "fp16", "bf16")
    if not torch.cuda.is_available():
        assert request.device == "cpu" and not request.cuda_graph
    assert request.backend == "torch" or (request.prior is None and request.checkpoint is None)
    assert isinstance(request.shard, tuple) and 0 <= request.shard[0] < request.shard[1]


def test_flags_are_read_from_the_typer_command():
    flags = flags_of(cli.restore)
    assert flags["outdir"] == "-o/--outdir" and flags["sigma_y"] == "--sigma-y"
    assert flags["batch_size"] == "--batch-size" and flags["cuda_graph"] == "--cuda-graph"
    assert flags_of(cli.degrade)["fmt"] == "--format"
    options = set(inspect.signature(cli.restore).parameters) - {"inputs", "quiet", "sample"}
    assert options <= set(flags)
    assert set(option_names()) - set(flags) == {"shard", "denoiser"}  # the API's own: no flag sets them
    error = ParameterError("sigma_y", 2, "must be a finite number in [0, 1]")
    assert flag_message(error, flags) == "--sigma-y 2: must be a finite number in [0, 1]"
    assert flag_message(error) == "--sigma-y 2: must be a finite number in [0, 1]"  # the dashed name by default


@pytest.mark.parametrize("options, api_message, args, cli_message", [
    ({"fmt": "tiff"}, "fmt=tiff: must be pt or npy", ["--format", "tiff"], "--format tiff: must be pt or npy"),
    ({"seed": -1}, "seed=-1: must be an integer >= 0", ["--seed", "-1"], "--seed -1: must be an integer >= 0"),
    ({"resize": True}, "resize=True: needs a size", ["--resize"], "--resize True: needs a size"),
    ({"sigma_y": 3.0}, "sigma_y=3.0: must be a finite number", ["--sigma-y", "3"], "--sigma-y 3.0: must be a finite"),
])
def test_degrade_errors_name_the_parameter_and_the_cli_names_the_flag(folder, tmp_path, options, api_message, args,
                                                                       cli_message):
    with pytest.raises(ParameterError, match=api_message.replace("[", r"\[")):
        api.degrade([folder], tmp_path / "obs", **options)
    res = runner.invoke(cli.app, ["degrade", str(folder), "-o", str(tmp_path / "obs"), *args])
    assert res.exit_code == 2 and cli_message in res.output, res.output
    assert not (tmp_path / "obs").exists()


@pytest.mark.parametrize("options, api_message, args, cli_message", [
    ({"bits": 12}, "bits=12: must be 8 or 16", ["--bits", "12"], "--bits 12: must be 8 or 16"),
    ({"resize": True}, "resize=True: needs a size", ["--resize"], "--resize True: needs a size"),
    ({"hyper": {"lam": 2}}, "hyper=lam: not a hyper-parameter", ["--hyper", "lam=2"],
     "--hyper lam: not a hyper-parameter"),
    ({"preset": "ddpg/celeba_hq/sr4/0.05", "method": "idpg"}, "method=idpg: contradicts preset",
     ["--preset", "ddpg/celeba_hq/sr4/0.05", "--method", "idpg"], "--method idpg: contradicts preset"),
    ({"outdir": "IN"}, "outdir=", ["-o", "IN"], "-o/--outdir"),
])
def test_restore_errors_name_the_parameter_and_the_cli_names_the_flag(folder, tmp_path, options, api_message, args,
                                                                       cli_message):
    outdir = folder if options.pop("outdir", None) else tmp_path / "out"
    with pytest.raises(DdpgError, match=api_message):
        api.restore([folder], outdir, prior="gaussian", **options)
    res = runner.invoke(cli.app, ["restore", "--prior", "gaussian", str(folder),
                                  *(["-o", str(outdir)] if "-o" not in args else []),
                                  *[str(folder) if a == "IN" else a for a in args]])
    assert res.exit_code == 2 and cli_message in res.output, res.output


def test_settings_are_checked_before_the_prior_is_loaded(folder, tmp_path, monkeypatch):
    """A mask the task does not use, or a method CUDA graphs cannot capture, is refused before any weights load."""
    from ddpg.api import restoration

    loaded = []
    monkeypatch.setattr(restoration, "make_denoiser", lambda *a, **k: loaded.append(a))
    with pytest.raises(ParameterError, match="mask=box: applies to the inpaint task"):
        api.restore([folder], tmp_path / "out", prior="face64", task="denoise", mask="box")
    with pytest.raises(ParameterError, match="hyper=lam: not a hyper-parameter of ddpg"):
        api.restore([folder], tmp_path / "out", prior="face64", hyper={"lam": 1})
    assert loaded == [] and not (tmp_path / "out").exists()
