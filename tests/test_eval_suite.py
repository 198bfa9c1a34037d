"""`ddpg evaluate suite`: a YAML plan on the analytic Gaussian prior and three tiny images, end to end — tables,
crops, NFE, a second run that reuses every cell, an interrupted cell that resumes image by image, refusals."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import ddpg.api.suite as suite
from ddpg.api.evaluation import FeatureSource
from ddpg.api.suite import run_suite
from ddpg.api.suite_plan import load_plan
from ddpg.cli.main import app
from ddpg.errors import ConfigError
from ddpg.metrics import kid

N_IMAGES, SIZE, STEPS = 3, 16, 4
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def write_plan(tmp_path, **changes) -> str:
    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        rng = np.random.default_rng(0)
        for i in range(N_IMAGES):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(data / f"im{i}.png")
    plan = {"prior": "gaussian", "dataset": str(data), "out": str(tmp_path / "results"), "seed": 2,
            "grid": [{"methods": ["ddpg", "ddnm"], "tasks": ["sr4"], "sigma_y": [0.05, 0.0], "steps": [STEPS]},
                     {"methods": ["ddpg"], "tasks": ["deblur_gauss"], "sigma_y": [0.05], "steps": [STEPS],
                      "images": 2}],
            **changes}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return str(path)


@pytest.fixture(scope="module")
def random_features(tmp_path_factory):
    from metric_oracles import random_inception

    return FeatureSource(network=random_inception(), weights_id="random", cache=tmp_path_factory.mktemp("feats"))


def test_suite_end_to_end_and_second_run_reuses_every_cell(tmp_path, random_features, monkeypatch):
    plan = load_plan(write_plan(tmp_path))
    assert [c.name for c in plan.cells] == ["ddpg_sy0.05_n4", "ddpg_sy0_n4", "ddnm_sy0.05_n4", "ddnm_sy0_n4",
                                            "ddpg_sy0.05_n4"]
    report = run_suite(plan, features=random_features)
    assert report.exit_code == 0 and len(report.done) == 5 and not report.skipped
    out = tmp_path / "results"
    tables = json.loads((out / "tables.json").read_text())
    sr4 = tables["tasks"]["sr4"]
    assert sr4["sigma_y"] == [0.05, 0.0] and [r["method"] for r in sr4["rows"]] == ["ddpg", "ddnm"]
    cell = sr4["rows"][0]["cells"]["0.05"]
    record = json.loads((out / "cells" / "sr4" / "ddpg_sy0.05_n4" / "cell.json").read_text())
    assert cell["psnr"] == record["metrics"]["psnr"] and cell["nfe_per_image"] == STEPS  # one UNet call a step
    sidecars = [json.loads((out / "cells" / "sr4" / "ddpg_sy0.05_n4" / f"im{i}.json").read_text())
                for i in range(N_IMAGES)]
    assert cell["seconds_per_image"] == pytest.approx(np.mean([s["timings_s"]["restore_per_image"]
                                                               for s in sidecars]))
    assert [s["seed"] for s in sidecars] == [2, 3, 4] and cell["command"].startswith("ddpg restore ")
    # KID over the cell's restorations against their ground truth, from the same features
    extractor = random_features.extractor()
    x = extractor.features([out / "cells" / "sr4" / "ddpg_sy0.05_n4" / f"im{i}_restored.png" for i in range(3)])
    y = extractor.features([tmp_path / "data" / f"im{i}.png" for i in range(3)])
    assert cell["kid"] == pytest.approx(kid(x, y)[0], rel=1e-9)
    assert tables["tasks"]["deblur_gauss"]["rows"][0]["images"] == 2
    md = (out / "tables.md").read_text()
    assert "### sr4" in md and "| ddnm | 3 |" in md and "partial" not in md and "KID×10³↓" in md
    assert "FID not reported" in md  # 3 images are far too few for FID, and the table says so
    baseline = np.mean([s["metrics"]["baseline_psnr"] for s in sidecars])
    assert record["baseline"]["name"] == "bicubic" and record["baseline"]["psnr"] == pytest.approx(baseline)
    assert f"| baseline: bicubic (PSNR only) | | {baseline:.2f} |" in md
    assert (out / "crops_sr4_sy0.05.png").is_file() and (out / "crops_deblur_gauss_sy0.05.png").is_file()

    # a second run: nothing restored or scored again, the same tables
    def refuse(*args, **kwargs):
        raise AssertionError("a finished cell was redone")

    monkeypatch.setattr(suite, "restore", refuse)
    monkeypatch.setattr(suite, "score_cell", refuse)
    again = run_suite(load_plan(write_plan(tmp_path)), features=random_features)
    assert again.exit_code == 0 and len(again.skipped) == 5 and not again.done
    assert json.loads((out / "tables.json").read_text())["tasks"] == tables["tasks"]
    # --rescore scores the finished cells again (still restoring nothing), here without set metrics
    monkeypatch.undo()
    monkeypatch.setattr(suite, "restore", refuse)
    rescored = run_suite(load_plan(write_plan(tmp_path, inception=str(tmp_path / "none.pth"))), restore=False,
                         rescore=True)
    assert len(rescored.done) == 5
    assert json.loads((out / "tables.json").read_text())["tasks"]["sr4"]["rows"][0]["cells"]["0.05"]["kid"] is None


def test_a_rerun_on_a_clone_without_restorations_changes_no_committed_file(tmp_path, monkeypatch):
    """As a fresh clone: cells hold cell.json and evaluation/ but no restorations (they are not committed), and
    the machine differs; a re-run restores nothing and leaves tables and crops byte for byte as they were."""
    import ddpg.api.suite_tables as suite_tables

    run_suite(load_plan(write_plan(tmp_path)))
    out = tmp_path / "results"
    committed = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"tables.md", "tables.json", "crops_sr4_sy0.05.png", "crops_sr4_sy0.png"} <= set(committed)
    for png in (out / "cells").rglob("*.png"):
        png.unlink()
    monkeypatch.setattr(suite_tables, "versions", lambda device: {"platform": "another machine"})
    again = run_suite(load_plan(write_plan(tmp_path)))
    assert again.exit_code == 0 and len(again.skipped) == 5 and not again.done
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == committed
    # a grid that no machine here can make again is no longer linked; the changed tables carry this machine
    (out / "crops_sr4_sy0.png").unlink()
    run_suite(load_plan(write_plan(tmp_path)))
    md = (out / "tables.md").read_text()
    assert "(crops_sr4_sy0.05.png)" in md and "crops_sr4_sy0.png" not in md
    assert json.loads((out / "tables.json").read_bytes())["versions"] == {"platform": "another machine"}


def test_interrupted_cell_resumes_per_image_and_partial_tables(tmp_path, random_features, monkeypatch):
    path = write_plan(tmp_path)
    plan = load_plan(path)
    run_suite(plan, score=False)  # restore everything, score nothing
    assert not (tmp_path / "results" / "tables.md").exists()
    celldir = plan.cell_dir(plan.cells[0])
    before = (celldir / "im1_restored.png").read_bytes()
    # as if killed while restoring im1: restore writes an image's files together, so none of them is there
    # (a lone im1_observed.png would be refused as a file no sidecar names: never overwritten)
    for name in ("im1_observed.png", "im1_restored.png", "im1.json"):
        (celldir / name).unlink()
    calls = []
    real_restore = suite.restore

    def counting(files, *args, **kwargs):
        report = real_restore(files, *args, **kwargs)
        calls.append((len(report.done), len(report.skipped)))
        return report

    monkeypatch.setattr(suite, "restore", counting)
    plan.cells = plan.cells[:2]  # score only two cells: the tables show the others as pending
    report = run_suite(plan, features=random_features)
    assert report.exit_code == 0 and calls == [(1, 2), (0, 3)]
    assert (celldir / "im1_restored.png").read_bytes() == before  # seeded: the same restoration
    assert json.loads((celldir / "cell.json").read_text())["nfe_per_image"] == STEPS
    plan = load_plan(path)
    from ddpg.api.suite_tables import write_tables

    data = write_tables(plan)
    assert data["tasks"]["sr4"]["rows"][1]["cells"]["0.05"]["pending"]
    assert "partial: 2 of 4 cells finished" in (tmp_path / "results" / "tables.md").read_text()


def test_score_only_leaves_incomplete_cells_pending(tmp_path, random_features, monkeypatch):
    """--score-only (e.g. beside a run that is still restoring): complete cells are scored, the rest pending."""
    plan = load_plan(write_plan(tmp_path))
    run_suite(plan, score=False)
    (plan.cell_dir(plan.cells[0]) / "im2_restored.png").unlink()
    monkeypatch.setattr(suite, "restore", lambda *a, **k: pytest.fail("--score-only restored"))
    report = run_suite(load_plan(write_plan(tmp_path)), restore=False, features=random_features)
    assert report.exit_code == 0 and len(report.done) == 4 and str(plan.cell_dir(plan.cells[0])) not in report.done
    assert json.loads((plan.cell_dir(plan.cells[1]) / "cell.json").read_text())["nfe_per_image"] == STEPS
    assert "### sr4 — partial: 3 of 4 cells finished" in (tmp_path / "results" / "tables.md").read_text()


def test_plan_errors_and_a_cell_made_with_other_settings(tmp_path, random_features):
    with pytest.raises(ConfigError, match="unknown plan keys"):
        load_plan(write_plan(tmp_path, colour="red"))
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        load_plan(write_plan(tmp_path, grid=[{"methods": ["nope"], "tasks": ["sr4"], "sigma_y": 0, "steps": 2}]))
    with pytest.raises(ConfigError, match="images 9 is not in 1..3"):
        load_plan(write_plan(tmp_path, images=9))
    small = [{"methods": ["ddpg"], "tasks": ["sr4"], "sigma_y": [0.05], "steps": [STEPS], "images": 1}]
    run_suite(load_plan(write_plan(tmp_path, grid=small)), features=random_features)
    record = tmp_path / "results" / "cells" / "sr4" / "ddpg_sy0.05_n4" / "cell.json"
    kept = record.read_text()
    with pytest.raises(ConfigError, match="made with other settings"):
        run_suite(load_plan(write_plan(tmp_path, grid=small, seed=5)), features=random_features)
    assert record.read_text() == kept  # nothing overwritten
    other_weights = json.loads(kept)
    other_weights["prior_record"]["checkpoint_sha256"] = "0" * 64  # as if restored with a checkpoint
    record.write_text(json.dumps(other_weights))
    with pytest.raises(ConfigError, match="restored with other gaussian weights"):
        run_suite(load_plan(write_plan(tmp_path, grid=small)), features=random_features)
    other_preset = json.loads(kept)
    other_preset["hyper"]["gamma"] = 300  # as if ddpg restore had taken another preset row then
    record.write_text(json.dumps(other_preset))
    with pytest.raises(ConfigError, match=r"other hyper-parameters than ddpg restore takes now \(preset "
                                          r"ddpg/gaussian/sr4/0.05\): gamma 300 → 10"):
        run_suite(load_plan(write_plan(tmp_path, grid=small)), features=random_features)
    record.write_text(kept)
    assert run_suite(load_plan(write_plan(tmp_path, grid=small)), features=random_features).skipped  # reused


def test_cli_suite_and_torchrun_ranks_match_one_process(tmp_path):
    """`ddpg evaluate suite` in one process, then under torchrun with 2 gloo ranks into another folder: the same
    restorations, byte for byte, and the same table."""
    one = tmp_path / "one"
    one.mkdir()
    grid = [{"methods": ["ddpg"], "tasks": ["sr4"], "sigma_y": [0.05], "steps": [STEPS]}]
    plan = write_plan(one, grid=grid, inception=str(tmp_path / "missing.pth"))
    res = CliRunner().invoke(app, ["evaluate", "suite", plan, "-q"])
    assert res.exit_code == 0, res.output
    assert "tables.md" in res.output
    md = (one / "results" / "tables.md").read_text()
    assert "pt_inception-2015-12-05" in md  # without the weights the set metrics say where to get them
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env["OMP_NUM_THREADS"] = "1"
    ranks = tmp_path / "ranks"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "ddpg", "evaluate", "suite", plan, "--out", str(ranks), "-q"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    cell = "cells/sr4/ddpg_sy0.05_n4"
    for i in range(N_IMAGES):
        assert (ranks / cell / f"im{i}_restored.png").read_bytes() == (one / "results" / cell /
                                                                        f"im{i}_restored.png").read_bytes()
    a = json.loads((ranks / cell / "cell.json").read_text())
    b = json.loads((one / "results" / cell / "cell.json").read_text())
    assert a["metrics"]["psnr"] == b["metrics"]["psnr"] and a["nfe_per_image"] == b["nfe_per_image"] == STEPS


def test_every_method_of_a_task_restores_the_same_measurements(tmp_path, random_features):
    """The methods' presets blur with different Gaussians (dps: 25×25 σ 3, ddnm: 5×5 σ 10 SVD); the suite gives
    every method of a task the plan's operator, so their observations are the same, and cell.json, the table and
    the restore line name it. A cell restored with another operator is refused, never overwritten."""
    grid = [{"methods": ["ddnm", "dps"], "tasks": ["deblur_gauss"], "sigma_y": [0.05], "steps": [2], "images": 1}]
    operators = {"deblur_gauss": {"sigma": 1.5, "kernel_size": 7}}
    plan = load_plan(write_plan(tmp_path, grid=grid, operators=operators))
    assert run_suite(plan, features=random_features).exit_code == 0
    observed = [(plan.cell_dir(c) / "im0_observed.png").read_bytes() for c in plan.cells]
    assert observed[0] == observed[1]
    wanted = {"name": "deblur_gauss", "kernel_size": 7, "sigma": 1.5, "impl": "fft"}
    for cell in plan.cells:
        assert json.loads((plan.cell_dir(cell) / "cell.json").read_text())["operator"] == wanted
        assert json.loads((plan.cell_dir(cell) / "im0.json").read_text())["operator"]["sigma"] == 1.5
    tables = json.loads((tmp_path / "results" / "tables.json").read_text())["tasks"]["deblur_gauss"]
    assert tables["operator"] == wanted
    command = tables["rows"][1]["cells"]["0.05"]["command"]  # every parameter spelled out, as the suite gives it
    assert "--operator kernel_size=7 --operator sigma=1.5 --operator impl=fft" in command
    assert json.loads((plan.cell_dir(plan.cells[1]) / "im0.json").read_text())["settings"]["operator"] == {
        "task": "deblur_gauss", "kernel_size": 7, "sigma": 1.5, "impl": "fft"}
    md = (tmp_path / "results" / "tables.md").read_text()
    assert "operator deblur_gauss (kernel_size 7, sigma 1.5, impl fft)" in md  # make_operator's order

    # the plan's default operator (5×5 σ 10 circular) is another one: both finished cells are refused
    with pytest.raises(ConfigError, match=r"restored with another deblur_gauss operator .*'sigma': 1.5"):
        run_suite(load_plan(write_plan(tmp_path, grid=grid)), features=random_features)
    # a record from before cell.json named its operator stands for its preset's (dps: 25×25 σ 3)
    record = plan.cell_dir(plan.cells[1]) / "cell.json"
    older = json.loads(record.read_text())
    del older["operator"]
    record.write_text(json.dumps(older))
    with pytest.raises(ConfigError, match=r"another deblur_gauss operator \({'name': 'deblur_gauss', "
                                          r"'kernel_size': 25, 'sigma': 3.0"):
        run_suite(plan, features=random_features)
    # restorations whose sidecars name another operator are not scored
    record.unlink()
    sidecar = plan.cell_dir(plan.cells[1]) / "im0.json"
    held = json.loads(sidecar.read_text())
    held["operator"]["sigma"] = 2.0
    sidecar.write_text(json.dumps(held))
    report = run_suite(plan, restore=False, features=random_features)
    assert report.failed and "restored with another deblur_gauss operator" in report.failed[0][1]
    assert not record.exists()


@pytest.mark.parametrize("operators, message", [
    ({"deblur_gauss": {"scale": 2}}, "scale: not a parameter of the deblur_gauss operator"),
    ({"sr5": {}}, "'sr5' is not a task"),
    ({"inpaint": {"mask": "m.png"}}, "mask: not a parameter of the inpaint operator"),
    ([1], "'operators' maps tasks"),
])
def test_plan_operators_are_checked(tmp_path, operators, message):
    with pytest.raises(ConfigError, match=message):
        load_plan(write_plan(tmp_path, operators=operators))
