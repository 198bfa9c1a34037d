"""The command line on tiny images: every command, sidecars, failures, interruption."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ddpg import api
from ddpg.cli.main import app
from ddpg.io import load_image
from ddpg.metrics import psnr, ssim
from ddpg.models import create_prior

runner = CliRunner()
TINY_DDPM = {"kind": "ddpm", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16],
             "image_size": 32}


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        base = rng.integers(60, 200, (1, 1, 3))
        arr = np.clip(base + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
    return folder


def test_restore_degrade_evaluate_with_the_gaussian_prior(images, tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", str(images), "-o", str(out), "--task", "deblur_gauss", "--steps", "10",
                              "--sigma-y", "0.05", "-q"])
    assert res.exit_code == 0, res.output
    for i in range(3):
        meta = json.loads((out / f"img{i}.json").read_text())
        assert meta["seed"] == i and meta["steps"] == 10 and meta["preset"] == "ddpg/gaussian/deblur_gauss/0.05"
        restored = load_image(out / f"img{i}_restored.png")
        gt = load_image(images / f"img{i}.png")
        assert meta["metrics"]["psnr"] == pytest.approx(psnr(restored, gt), abs=0.05)  # 8-bit rounding
    # evaluate reproduces a direct computation
    res = runner.invoke(app, ["evaluate", "--pred", str(out), "--gt", str(images), "--obs", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    direct = np.mean([psnr(load_image(out / f"img{i}_restored.png"), load_image(images / f"img{i}.png"))
                      for i in range(3)])
    direct_ssim = np.mean([ssim(load_image(out / f"img{i}_restored.png"), load_image(images / f"img{i}.png"))
                           for i in range(3)])
    assert summary["mean"]["out/psnr"] == pytest.approx(direct, abs=1e-9)
    assert summary["mean"]["out/ssim"] == pytest.approx(direct_ssim, abs=1e-9)
    assert (out / "metrics.csv").read_text().count("\n") == 4 and (out / "grid.png").exists()
    assert "| out |" in (out / "summary.md").read_text()
    # degrade, then restore the exact measurement as an observation
    obs = tmp_path / "obs"
    res = runner.invoke(app, ["degrade", str(images / "img0.png"), "-o", str(obs), "--task", "sr4"])
    assert res.exit_code == 0, res.output
    y = torch.load(obs / "img0_observed.pt", weights_only=True)
    assert y.shape == (3, 8, 8)
    res = runner.invoke(app, ["restore", str(obs / "img0_observed.pt"), "-o", str(tmp_path / "o2"), "--observed",
                              "--steps", "5", "-q"])
    assert res.exit_code == 0, res.output
    assert load_image(tmp_path / "o2" / "img0_observed_restored.png").shape == (3, 32, 32)


def test_restore_with_a_tiny_unet_checkpoint_and_idpg(images, tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    torch.save(create_prior(TINY_DDPM).state_dict(), ckpt)
    (tmp_path / "tiny.yaml").write_text(json.dumps(TINY_DDPM))  # JSON is valid YAML
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", str(images / "img1.png"), "-o", str(out), "--prior",
                              str(tmp_path / "tiny.yaml"), "--checkpoint", str(ckpt), "--method", "idpg",
                              "--steps", "5", "-q"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "img1.json").read_text())
    assert meta["method"] == "idpg" and meta["checkpoint"] == str(ckpt)


def test_failures_are_reported_and_the_rest_is_processed(images, tmp_path):
    (images / "zz_corrupt.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", str(images), str(tmp_path / "missing_dir"), "-o", str(out),
                              "--steps", "3", "-q"])
    assert res.exit_code == 1
    assert "zz_corrupt.png" in res.output and "missing_dir" in res.output
    assert sorted(p.name for p in out.glob("*_restored.png")) == [f"img{i}_restored.png" for i in range(3)]
    # a wrong-size mask fails each input clearly
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "mask.png")
    res = runner.invoke(app, ["restore", str(images / "img0.png"), "-o", str(tmp_path / "m"), "--task", "inpaint",
                              "--mask", str(tmp_path / "mask.png"), "--steps", "3", "-q"])
    assert res.exit_code == 1 and "mask has shape" in res.output
    # a usage error
    res = runner.invoke(app, ["restore", str(images), "-o", str(out), "--task", "sr3"])
    assert res.exit_code == 2 and "unknown task" in res.output
    res = runner.invoke(app, ["restore", str(images), "-o", str(out), "--preset", "ddpg/nope/sr4/0"])
    assert res.exit_code == 2 and "unknown preset" in res.output


def test_full_disk_leaves_no_partial_file_and_others_continue(images, tmp_path, monkeypatch):
    import ddpg.api

    real = ddpg.api.save_image
    calls = {"n": 0}

    def flaky(img, path, bits=8):
        calls["n"] += 1
        if "img1_restored" in str(path):
            raise OSError(28, "No space left on device")
        real(img, path, bits)

    monkeypatch.setattr(ddpg.api, "save_image", flaky)
    out = tmp_path / "out"
    report = api.restore([images], out, task="denoise", steps=3)
    assert [f for f, _ in report.failed] == [str(images / "img1.png")]
    assert "No space left" in report.failed[0][1]
    assert not (out / "img1_restored.png").exists() and not (out / "img1.json").exists()
    assert (out / "img2_restored.png").exists() and not list(out.glob("*.part"))


def test_keyboard_interrupt_stops_cleanly(images, tmp_path):
    class Interrupting:
        def step_callback(self, name, steps):
            def cb(step, x, x0):
                if name == "img1" and step == 2:
                    raise KeyboardInterrupt

            return cb

    out = tmp_path / "out"
    report = api.restore([images], out, task="sr4", steps=5, progress=Interrupting())
    assert report.interrupted and report.exit_code == 130
    assert (out / "img0_restored.png").exists() and not (out / "img1_restored.png").exists()
    assert not list(out.glob("*.part"))


def test_batches_restore_each_image_as_alone(images, tmp_path):
    api.restore([images], tmp_path / "one", task="sr4", steps=4, batch_size=1)
    api.restore([images], tmp_path / "three", task="sr4", steps=4, batch_size=3)
    for i in range(3):
        a = load_image(tmp_path / "one" / f"img{i}_restored.png")
        b = load_image(tmp_path / "three" / f"img{i}_restored.png")
        assert (a - b).abs().max() <= 1 / 255  # same restoration up to 8-bit rounding


def test_skip_existing_resumes(images, tmp_path):
    out = tmp_path / "out"
    api.restore([images / "img0.png"], out, steps=3)
    report = api.restore([images], out, steps=3, skip_existing=True)
    assert report.skipped == [str(images / "img0.png")] and len(report.done) == 2


def test_models_and_presets_commands():
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0 and "face64" in res.output and "bundled" in res.output
    res = runner.invoke(app, ["models", "verify", "face64"])
    assert res.exit_code == 0 and "matches the registry" in res.output
    res = runner.invoke(app, ["models", "info", "imagenet256_uncond"])
    assert res.exit_code == 0 and json.loads(res.output)["config"]["num_channels"] == 256
    res = runner.invoke(app, ["presets", "list", "--method", "idpg", "--prior", "celeba_hq"])
    assert res.exit_code == 0 and len(res.output.split()) == 10
    res = runner.invoke(app, ["presets", "show", "ddpg/celeba_hq/sr4/0.05"])
    assert json.loads(res.output)["hyper"]["gamma"] == 10
    for cmd in (["restore"], ["degrade"], ["evaluate"], ["models", "list"], ["presets", "show"]):
        res = runner.invoke(app, [*cmd, "--help"])
        assert res.exit_code == 0 and "Example" in res.output


def test_real_subprocess_and_sigint(images, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "ddpg", "restore", str(images / "img0.png"), "-o",
                           str(tmp_path / "a"), "--steps", "3", "-q"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a" / "img0_restored.png").exists()
    # SIGINT in the middle of a long batch: exit code 130, finished files complete, no partial file
    proc = subprocess.Popen([sys.executable, "-m", "ddpg", "restore", str(images), "-o", str(tmp_path / "b"),
                             "--steps", "1000", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)
    deadline = time.time() + 60
    while not (tmp_path / "b" / "img0_restored.png").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not list((tmp_path / "b").glob("*.part"))
