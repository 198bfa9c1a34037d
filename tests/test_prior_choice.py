"""No silent garbage by default: a restoration names its prior (there is no default; the error lists them), and an
input far from the prior's native size gets one note saying so, from ``ddpg.restore`` and ``ddpg restore`` alike.
The restorations themselves are not run (``run_plan`` is replaced): what is tested happens before it."""

import logging

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import ddpg.api.restoration as restoration
from ddpg import api
from ddpg.api.settings import PRIOR_IMAGES, size_note
from ddpg.cli.main import app
from ddpg.errors import ParameterError
from ddpg.models import PRIOR_NAMES

runner = CliRunner()


@pytest.fixture
def no_sampling(monkeypatch):
    """Restorations stop before sampling; the inputs they would have restored are listed."""
    ran = []
    monkeypatch.setattr(restoration, "run_plan", lambda plan, pending, *a: ran.extend(pending))
    return ran


def photo(path, width: int, height: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_no_prior_is_an_error_listing_them_all(tmp_path, no_sampling):
    image = photo(tmp_path / "in" / "a.png", 64, 64)
    with pytest.raises(ParameterError, match="prior=not given: name the prior your images fit") as err:
        api.restore([image], tmp_path / "out", steps=2)
    res = runner.invoke(app, ["restore", str(image), "-o", str(tmp_path / "cli"), "--steps", "2"])
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "--prior not given: name the prior your images fit: face64 (64-px faces; bundled)" in text
    for name in PRIOR_NAMES:
        assert f"{name} ({PRIOR_IMAGES[name]}" in str(err.value) and f"{name} (" in text, name
    assert no_sampling == [] and not (tmp_path / "out").exists() and not (tmp_path / "cli").exists()


def test_a_preset_or_a_checkpoint_names_the_prior(tmp_path):
    image = photo(tmp_path / "a.png", 64, 64)
    plan = api.plan_restore(api.RestoreRequest(inputs=[image], outdir=tmp_path / "o", preset="ddpg/face64/sr4/0.05"))
    assert plan.record["prior"]["name"] == "face64"


def test_the_note_names_the_native_size_only_when_far_from_it(tmp_path, no_sampling, caplog):
    far, near = photo(tmp_path / "far" / "photo.png", 200, 150), photo(tmp_path / "near" / "face.png", 64, 64)
    with caplog.at_level(logging.WARNING, logger="ddpg"):
        api.restore([far.parent], tmp_path / "o1", prior="face64", steps=2, tile="off")  # untiled: the UNet sees it all
        notes = [r.getMessage() for r in caplog.records if "trained on" in r.getMessage()]
        assert len(notes) == 1 and f"{far} is 200×150 px, far from the 64×64 images the prior face64" in notes[0]
        caplog.clear()
        api.restore([near.parent], tmp_path / "o2", prior="face64", steps=2)
        api.restore([far.parent], tmp_path / "o3", prior="face64", steps=2, resize=True)  # resized to 64 px
        api.restore([far.parent], tmp_path / "o4", prior="gaussian", steps=2)  # no native size
        api.restore([far.parent], tmp_path / "o5", prior="face64", steps=2)  # tiled (--tile auto): 64-px tiles
        assert not [r for r in caplog.records if "trained on" in r.getMessage()]
    res = runner.invoke(app, ["restore", str(far), "-o", str(tmp_path / "cli"), "--prior", "face64", "--tile", "off",
                              "-q"],
                        env={"COLUMNS": "300"})
    assert "far from the 64×64 images the prior face64 was trained on" in " ".join(res.output.split()), res.output
    assert len(no_sampling) == 6


@pytest.mark.parametrize(("size", "far"), [((64, 64), False), ((128, 128), False), ((32, 40), False),
                                           ((150, 200), True), ((64, 129), True), ((31, 64), True)])
def test_far_means_more_than_twice_or_under_half_the_native_side(size, far):
    assert (size_note("x.png", size, "face64", 64) is not None) is far
    assert size_note("x.png", size, "gaussian", None) is None
