"""Every option value is checked before any input is read: a bad ``--operator``, ``--hyper`` or ``--size`` value
ends the run with exit 2 and a message naming the flag, no image is opened and nothing is written; numbers are
read as Python writes them, so a value copied from a sidecar (``1e-05``) is taken back."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import ddpg.api.restoration
from ddpg.api.settings import parse_hyper
from ddpg.cli.main import app
from ddpg.errors import OperatorError
from ddpg.operators import make_operator

runner = CliRunner()


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


BAD_OPTIONS = [
    (["--operator", "scale=0"], "--operator", "scale=0 must be an integer >= 1"),
    (["--task", "deblur_gauss", "--operator", "kernel_size=0"], "--operator", "kernel_size=0 must be an integer"),
    (["--task", "deblur_gauss", "--operator", "sigma=nan"], "--operator", "sigma=nan must be a finite number"),
    (["--task", "deblur_gauss", "--operator", "threshold=1.5"], "--operator", "threshold=1.5 must be a finite"),
    (["--task", "deblur_motion", "--operator", "kernel_size=2"], "--operator", "kernel_size=2 must be an integer >= 3"),
    (["--task", "deblur_motion", "--operator", "intensity=2"], "--operator", "intensity=2 must be a finite number"),
    (["--hyper", "zeta=2"], "--hyper", "zeta must be in [0, 1]"),
    (["--hyper", "step_size_mode=7"], "--hyper", "step_size_mode must be 0, 1 or 2"),
    (["--hyper", "n_max=1"], "--hyper", "n_max must be an integer >= 2"),
    (["--method", "ddrm", "--hyper", "eta=nan"], "--hyper", "eta=nan"),
    (["--resize", "--size", "1000000000"], "--size", "more than the limit of 33,554,432 (max_pixels)"),
    (["--resize", "--size", "100", "--max-pixels", "9999"], "--size", "more than the limit of 9,999"),
]


@pytest.mark.parametrize("options, flag, problem", BAD_OPTIONS, ids=[" ".join(o[0]) for o in BAD_OPTIONS])
def test_a_bad_option_value_stops_the_run_before_any_input_is_read(images, tmp_path, monkeypatch, options, flag,
                                                                     problem):
    opened = []
    monkeypatch.setattr(ddpg.api.restoration, "load_image", lambda *a, **k: opened.append(a) or 1 / 0)
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images), "-o", str(out), "--steps", "2", *options])
    assert res.exit_code == 2, res.output
    assert flag in res.output and problem in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output and not opened
    assert not out.exists() or not any(out.iterdir())


def test_degrade_checks_its_size_against_the_pixel_limit(images, tmp_path):
    res = runner.invoke(app, ["degrade", str(images), "-o", str(tmp_path / "obs"), "--resize", "--size", "100000"])
    assert res.exit_code == 2, res.output
    assert "--size 100000" in res.output and "max_pixels" in res.output
    assert not (tmp_path / "obs").exists() or not any((tmp_path / "obs").iterdir())


@pytest.mark.parametrize("params", [{"scale": 0}, {"scale": 2.5}, {"scale": True}, {"threshold": -1}])
def test_make_operator_refuses_values_no_size_could_take(params):
    with pytest.raises(OperatorError, match="sr_bicubic: "):
        make_operator("sr_bicubic", 64, **params)


def test_numbers_are_read_as_python_writes_them():
    parsed = parse_hyper(["xi=1e-5", "a=1e-05", "b=10", "c=.5", "d=-3", "e=1E3", "f=true", "g=word", "h=5."])
    assert parsed == {"xi": 1e-5, "a": 1e-5, "b": 10, "c": 0.5, "d": -3, "e": 1000.0, "f": True, "g": "word",
                      "h": 5.0}
    assert isinstance(parsed["b"], int) and isinstance(parsed["e"], float)


def test_a_hyper_parameter_copied_from_a_sidecar_restores_again(images, tmp_path):
    first = tmp_path / "first"
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images / "a.png"), "-o", str(first), "--steps",
                              "2", "-q", "--hyper", "xi=0.00001"])
    assert res.exit_code == 0, res.output
    xi = json.loads((first / "a.json").read_text())["settings"]["hyper"]["xi"]
    written = json.dumps(xi)
    assert written == "1e-05"  # what a user copies from the sidecar
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images / "a.png"), "-o", str(tmp_path / "second"),
                              "--steps", "2", "-q", "--hyper", f"xi={written}"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "second" / "a_restored.png").read_bytes() == (first / "a_restored.png").read_bytes()
