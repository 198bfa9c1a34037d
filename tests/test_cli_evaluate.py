"""`ddpg evaluate` reproduces hand-computed PSNR/SSIM on two fixed 8-bit image pairs, for several methods."""

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ddpg.cli.main import app
from metric_oracles import checkerboard_ssim_by_hand

runner = CliRunner()
A, E, B, F = 128, 40, 100, 20  # 8-bit levels: exact in PNG


def save(arr: np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def checker(level: int, amp: int, n: int = 32) -> np.ndarray:
    sign = (-1) ** (np.arange(n)[:, None] + np.arange(n)[None, :])
    return np.repeat((level + amp * sign)[..., None], 3, axis=2)


@pytest.fixture
def folders(tmp_path):
    gt, ours, theirs, obs = (tmp_path / n for n in ("gt", "ours", "theirs", "obs"))
    save(np.full((32, 32, 3), 100), gt / "flat.png")
    save(checker(A, E), gt / "checker.png")
    save(np.full((32, 32, 3), 110), ours / "flat_restored.png")  # restore's naming
    save(checker(B, F), ours / "checker_restored.png")
    save(np.full((32, 32, 3), 90), theirs / "flat.png")  # plain naming; no prediction for "checker"
    save(np.full((8, 8, 3), 100), obs / "flat_observed.png")
    return gt, ours, theirs, obs


def test_evaluate_matches_hand_computations(folders, tmp_path):
    gt, ours, theirs, obs = folders
    out = tmp_path / "report"
    res = runner.invoke(app, ["evaluate", "--pred", str(ours), "--pred", str(theirs), "--gt", str(gt),
                              "--obs", str(obs), "-o", str(out), "--label", "ours", "--label", "theirs"])
    assert res.exit_code == 1, res.output  # theirs lacks "checker": named, the rest evaluated
    assert "no prediction for checker.png" in res.output
    rows = {(r["image"], r["method"]): r for r in csv.DictReader((out / "metrics.csv").open())}
    assert set(rows) == {("flat", "ours"), ("checker", "ours"), ("flat", "theirs")}
    a, b = 100 / 255, 110 / 255
    flat_psnr = 20 * math.log10(255 / 10)
    flat_ssim = (2 * a * b + 1e-4) / (a * a + b * b + 1e-4)
    checker_psnr = -10 * math.log10(((A - B) / 255) ** 2 + ((E - F) / 255) ** 2)
    checker_ssim = checkerboard_ssim_by_hand(B / 255, F / 255, A / 255, E / 255)
    tol = 1e-4  # images are read as float32
    assert float(rows["flat", "ours"]["psnr"]) == pytest.approx(flat_psnr, abs=tol)
    assert float(rows["flat", "ours"]["ssim"]) == pytest.approx(flat_ssim, abs=1e-6)
    assert float(rows["checker", "ours"]["psnr"]) == pytest.approx(checker_psnr, abs=tol)
    assert float(rows["checker", "ours"]["ssim"]) == pytest.approx(checker_ssim, abs=1e-6)
    assert float(rows["flat", "theirs"]["psnr"]) == pytest.approx(flat_psnr, abs=tol)  # |100 − 90| = 10 too
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"]["ours"]["images"] == 2
    assert summary["methods"]["ours"]["psnr"] == pytest.approx((flat_psnr + checker_psnr) / 2, abs=tol)
    assert summary["methods"]["ours"]["ssim"] == pytest.approx((flat_ssim + checker_ssim) / 2, abs=1e-6)
    assert summary["methods"]["theirs"]["images"] == 1
    table = (out / "summary.md").read_text()
    assert f"| ours | 2 | {(flat_psnr + checker_psnr) / 2:.2f} |" in table
    with Image.open(out / "grid.png") as grid:  # 2 rows × (ground truth, observation, ours, theirs)
        assert grid.width > 4 * 96 and grid.height > 2 * 96


def test_evaluate_defaults_and_usage_errors(folders, tmp_path):
    gt, ours, _, _ = folders
    res = runner.invoke(app, ["evaluate", "--pred", str(ours), "--gt", str(gt), "-q"])
    assert res.exit_code == 0, res.output
    assert (ours / "evaluation" / "summary.json").exists() and "| ours | 2 |" in res.output
    res = runner.invoke(app, ["evaluate", "--pred", str(ours), "--gt", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "nope: not a folder" in res.output


def test_mismatched_labels_name_the_parameter_in_the_api_and_the_flag_on_the_command_line(folders, tmp_path):
    from ddpg import api
    from ddpg.errors import ParameterError

    gt, ours, theirs, _ = folders
    with pytest.raises(ParameterError, match=r"^labels=\['a'\]: 1 labels for 2 prediction folders") as info:
        api.evaluate([ours, theirs], gt, tmp_path / "r", labels=["a"])
    assert "--" not in str(info.value)
    res = runner.invoke(app, ["evaluate", "--pred", str(ours), "--pred", str(theirs), "--gt", str(gt),
                              "-o", str(tmp_path / "r"), "--label", "a"])
    assert res.exit_code == 2 and "--label ['a']: 1 labels for 2 prediction folders" in res.output, res.output
