"""Settings in plain sight: every restore names, before any work, the method, preset, prior, σ_y, steps,
operator and changed hyper-parameters it resolved; ``ddpg evaluate`` warns when the sets it compares were
restored from different measurements (or with different step counts), as their sidecars tell."""

import json
import logging

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ddpg import api
from ddpg.cli.main import app

runner = CliRunner()


@pytest.fixture
def faces(tmp_path):
    folder = tmp_path / "gt"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def test_restore_prints_the_resolved_settings_first(faces, tmp_path):
    res = runner.invoke(app, ["restore", str(faces), "-o", str(tmp_path / "out"), "--prior", "gaussian",
                              "--method", "ddnm", "--task", "deblur_gauss", "--steps", "3", "--hyper", "eta=0.5"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    line = text[text.index("restore: "):]
    assert line.startswith("restore: ddnm (preset ddnm/"), line
    for part in ("prior gaussian", "σ_y ", "3 steps", "operator deblur_gauss (kernel_size 5, sigma 10.0",
                 "hyper eta=0.5"):
        assert part in line[:400], (part, line[:400])
    assert text.index("restore: ddnm") < text.index("restored")


def test_restore_names_the_preset_sigma_it_took(faces, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="ddpg"):
        api.restore([faces], tmp_path / "out", prior="gaussian", method="ddnm", task="sr4", steps=2)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("restore: ")]
    sidecar = json.loads((tmp_path / "out" / "a.json").read_text())
    assert len(lines) == 1 and f"σ_y {sidecar['sigma_y']:g}," in lines[0]
    assert f"preset {sidecar['preset']}" in lines[0]


def test_evaluate_warns_when_the_compared_sets_restored_different_measurements(faces, tmp_path, caplog):
    api.restore([faces], tmp_path / "ddpg", prior="gaussian", method="ddpg", task="sr4", sigma_y=0.05, steps=2)
    api.restore([faces], tmp_path / "ddnm", prior="gaussian", method="ddnm", task="sr4", steps=2)  # its preset's σ_y
    api.restore([faces], tmp_path / "ddpg3", prior="gaussian", method="ddpg", task="sr4", sigma_y=0.05, steps=3)
    with caplog.at_level(logging.WARNING, logger="ddpg"):
        report = api.evaluate([tmp_path / "ddpg", tmp_path / "ddnm", tmp_path / "ddpg3"], faces,
                              tmp_path / "eval", set_metrics=False, use_lpips=False)
    notes = report.extra["summary"]["notes"]
    sigma = [n for n in notes if "different σ_y" in n]
    assert len(sigma) == 1 and "ddpg: 0.05" in sigma[0] and "ddnm: 0" in sigma[0], notes
    assert "different measurements" in sigma[0]
    steps = [n for n in notes if "different steps" in n]
    assert len(steps) == 1 and "ddpg3: 3" in steps[0] and "different measurements" not in steps[0]
    assert not [n for n in notes if "different operator" in n or "different seed" in n]
    assert {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING} >= set(sigma + steps)
    # like for like: no warning
    same = api.evaluate([tmp_path / "ddpg", tmp_path / "ddpg"], faces, tmp_path / "eval2", set_metrics=False,
                        use_lpips=False, labels=["x", "y"])
    assert not [n for n in same.extra["summary"]["notes"] if "compared sets" in n]
