"""Failures end with a clear message, no half-written file, and the rest of the batch processed: a corrupt
image, an unreadable folder, a wrong-size mask, a full disk, an output path under a file (exit 2, before any
work); Ctrl-C stops cleanly with exit code 130 (in process, and as a real SIGINT or SIGTERM to a real process,
sent at a known sampling step)."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import ddpg.io.images
import ddpg.io.json_files
from ddpg import api
from ddpg.cli import progress as cli_progress
from ddpg.cli.main import app

runner = CliRunner()


def make_images(folder: Path, sizes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def leftovers(folder: Path) -> list[str]:
    """Temporary files (``.name.xxxx.part``) left behind."""
    return [p.name for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".part"]


@pytest.fixture
def images(tmp_path):
    return make_images(tmp_path / "in", [(32, 32)] * 3)


def test_corrupt_image_and_unreadable_folders_fail_alone(images, tmp_path, monkeypatch):
    (images / "img1.png").write_bytes(b"\x89PNG truncated")
    (tmp_path / "locked").mkdir()
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self.name == "locked":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images), str(tmp_path / "locked"),
                              str(tmp_path / "missing"), "-o", str(out), "--steps", "3", "-q"])
    assert res.exit_code == 1
    assert "img1.png: cannot read image" in res.output
    assert "locked: cannot list folder (Permission denied)" in res.output
    assert "missing: no such file or folder" in res.output
    assert "2 restored, 0 skipped, 3 failed" in res.output
    assert sorted(p.name for p in out.glob("*_restored.png")) == ["img0_restored.png", "img2_restored.png"]
    assert not (out / "img1.json").exists() and leftovers(out) == []


def test_wrong_size_mask_fails_those_images_only(tmp_path):
    images = make_images(tmp_path / "in", [(32, 32), (48, 48)])
    Image.fromarray(np.full((32, 32), 255, dtype=np.uint8)).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images), "-o", str(out), "--task", "inpaint",
                              "--mask", str(tmp_path / "mask.png"), "--steps", "3", "-q"])
    assert res.exit_code == 1
    assert "img1.png: inpainting: mask has shape (32, 32), the image is (48, 48)" in res.output
    assert (out / "img0_restored.png").exists() and not (out / "img1_restored.png").exists()


def test_full_disk_leaves_no_partial_file_and_the_others_continue(images, tmp_path, monkeypatch):
    real = ddpg.io.atomic_write

    def full_disk(path, write):
        if Path(path).name.startswith(".img1"):  # every temporary file of img1's outputs
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, write)

    for writer in (ddpg.io.images, ddpg.io.json_files):  # the modules that write a restoration's outputs
        monkeypatch.setattr(writer, "atomic_write", full_disk)
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images), "-o", str(out), "--task", "denoise",
                              "--steps", "3", "-q"])
    assert res.exit_code == 1
    assert "No space left on device" in res.output and "img1.png" in res.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"img{i}{s}" for i in (0, 2) for s in (".json", "_observed.png", "_restored.png"))


def test_output_folder_under_a_file(images, tmp_path):
    (tmp_path / "file").write_text("x")
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images / "img0.png"), "-o",
                              str(tmp_path / "file" / "out"), "--steps", "2", "-q"])
    assert res.exit_code == 2 and "-o/--outdir" in res.output and "cannot write there" in res.output


def test_ctrl_c_mid_batch_stops_with_130_and_keeps_finished_outputs(images, tmp_path, monkeypatch):
    real = cli_progress.RichProgress.step_callback

    def interrupt_on_img1(self, name, steps):
        inner = real(self, name, steps)

        def callback(step, x, x0):
            inner(step, x, x0)
            if name == "img1" and step == 1:
                raise KeyboardInterrupt

        return callback

    monkeypatch.setattr(cli_progress.RichProgress, "step_callback", interrupt_on_img1)
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images), "-o", str(out), "--steps", "4"])
    assert res.exit_code == 130
    assert "interrupted: 1 restored" in res.output and "--skip-existing" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["img0.json", "img0_observed.png", "img0_restored.png"]
    # resuming finishes the rest
    report = api.restore([images], out, prior="gaussian", steps=4, skip_existing=True)
    assert report.skipped == [str(images / "img0.png")] and len(report.done) == 2


# `python -m ddpg` whose sampler, at step 1 of img1, writes a marker and then waits for ever: img0 is finished
# by then and img1 cannot finish before the signal arrives, however fast or busy the machine is. SIGINT gets
# Python's default handler as in a foreground job of an interactive shell: a test run started in the
# background (`cmd &` in a script, `nohup`) inherits SIGINT ignored, and Ctrl-C would then be lost.
BLOCKING_RUN = """
import pathlib, signal, sys, threading
from ddpg.cli import progress

signal.signal(signal.SIGINT, signal.default_int_handler)
from ddpg.cli.main import app

marker = pathlib.Path(sys.argv[1])
real = progress.RichProgress.step_callback

def step_callback(self, name, steps):
    inner = real(self, name, steps)

    def callback(step, x, x0):
        inner(step, x, x0)
        if name == "img1" and step == 1:
            marker.write_text("img1 at step 1")
            threading.Event().wait()  # returns only by the signal's KeyboardInterrupt

    return callback

progress.RichProgress.step_callback = step_callback
sys.argv = ["ddpg", *sys.argv[2:]]
app()
"""


def test_real_process_runs_to_the_end(images, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "ddpg", "restore", "--prior", "gaussian", str(images / "img0.png"),
                           "-o", str(tmp_path / "a"), "--steps", "3", "-q"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a" / "img0_restored.png").exists() and (tmp_path / "a" / "img0.json").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_real_signal_at_a_known_step(images, tmp_path, signum):
    """A real SIGINT (Ctrl-C) or SIGTERM to a real process, sent once it is known to be inside img1's sampling:
    exit 130, img0 complete, nothing of img1 or img2, no temporary file."""
    out, marker = tmp_path / "out", tmp_path / "at_step"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", BLOCKING_RUN, str(marker), "restore", "--prior", "gaussian",
                             str(images), "-o", str(out), "--steps", "3"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    try:
        deadline = time.monotonic() + 300  # a guard against a hung test, not a race: the process waits for us
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate(timeout=60)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: 1 restored" in err
    assert sorted(p.name for p in out.iterdir()) == ["img0.json", "img0_observed.png", "img0_restored.png"]
    assert leftovers(out) == []


# `python -m ddpg` that, once img1's restored image is written under its temporary name, writes a marker and
# waits for ever: killed there, it leaves img1's temporary files behind, as a SIGKILL or a power cut would
KILLED_WHILE_WRITING = """
import pathlib, sys, threading
import ddpg.api.restoration as restoration
from ddpg.cli.main import app

marker = pathlib.Path(sys.argv[1])
real = restoration.save_image

def save_image(img, path, bits=8):
    real(img, path, bits)
    if "img1_restored" in str(path):
        marker.write_text("img1 written under its temporary name")
        threading.Event().wait()

restoration.save_image = save_image
sys.argv = ["ddpg", *sys.argv[2:]]
app()
"""


def start_and_wait(script: str, marker: Path, *args: str) -> subprocess.Popen:
    """Start ``script`` with ``args`` and return once it has written ``marker`` (it then waits for us)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", script, str(marker), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + 300  # a guard against a hung test, not a race: the process waits for us
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not marker.exists():
        proc.kill()
        pytest.fail(f"the process never reached its marker: {proc.communicate(timeout=60)}")
    return proc


def test_a_rerun_removes_the_temporary_files_of_a_killed_run_and_only_those(images, tmp_path):
    out = tmp_path / "out"
    proc = start_and_wait(KILLED_WHILE_WRITING, tmp_path / "marker", "restore", "--prior", "gaussian", str(images),
                          "-o", str(out), "--steps", "2", "-q")
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate(timeout=60)
    stale = [name for name in leftovers(out) if name.endswith(".part")]
    assert stale and all(name.startswith((".img1_observed.png.", ".img1_restored.png.")) for name in stale), stale
    live = f".img2_restored.png.ddpg-{os.getpid()}-abcd1234.part"  # a running process's (this test's own)
    for name in (live, ".my_notes.part"):
        (out / name).write_text("not ddpg's to remove")
    report = api.restore([images], out, prior="gaussian", steps=2, skip_existing=True)
    assert report.skipped == [str(images / "img0.png")] and len(report.done) == 2, report
    assert sorted(leftovers(out)) == sorted([live, ".my_notes.part"])


def test_a_second_run_into_a_folder_in_use_is_refused_at_once(images, tmp_path):
    out = tmp_path / "out"
    proc = start_and_wait(BLOCKING_RUN, tmp_path / "marker", "restore", "--prior", "gaussian", str(images), "-o",
                          str(out), "--steps", "3", "-q")
    try:
        for command in (["restore", "--prior", "gaussian", str(images), "--steps", "2"], ["degrade", str(images)],
                        ["evaluate", "--pred", str(images), "--gt", str(images), "--no-lpips", "--no-set-metrics"]):
            res = runner.invoke(app, [*command, "-o", str(out), "-q"])
            assert res.exit_code == 2, res.output
            assert f"-o/--outdir {out}: another ddpg run (pid {proc.pid}) is writing into this folder" in res.output
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert sorted(p.name for p in out.iterdir()) == ["img0.json", "img0_observed.png", "img0_restored.png"]
    report = api.restore([images], out, prior="gaussian", steps=3, skip_existing=True)  # the folder is free again
    assert report.skipped == [str(images / "img0.png")] and len(report.done) == 2
