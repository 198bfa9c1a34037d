"""stderr carries only ddpg's own lines: no Kineto marker lines from ``ddpg bench``'s profile (filtered around
each profile only) and no FutureWarning from torch's ONNX exporter (filtered around the export only)."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import torch

from ddpg.bench.profile import kernel_times, without_kineto_markers

ROOT = Path(__file__).resolve().parents[1]
TINY = "{kind: ddpm, ch: 32, ch_mult: [1, 2], num_res_blocks: 1, attn_resolutions: [8], image_size: 32}"


def test_the_filter_drops_kineto_markers_and_keeps_everything_else(capfd):
    with without_kineto_markers():
        os.write(2, b"USDT:2026 profiler_start\nkept line\n")
        print("kept too", file=sys.stderr)
        rows = kernel_times(lambda: torch.ones(8) + 1, torch.device("cpu"), calls=2)
    os.write(2, b"USDT: outside the block\n")
    err = capfd.readouterr().err.splitlines()  # (pytest's own sys.stderr may order its line apart)
    assert sorted(err) == ["USDT: outside the block", "kept line", "kept too"] and rows


def test_ddpg_bench_writes_only_its_own_lines_to_stderr():
    done = subprocess.run([sys.executable, "-m", "ddpg", "bench", "--prior", TINY, "--size", "32", "--steps", "2",
                           "--iters", "2", "--warmup", "1", "--threads", "1"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["threads: 1", "torch fp32: batch 1",
                                        "torch fp32: accuracy check against the plain fp32 path"], done.stderr


def test_ddpg_restore_writes_only_its_own_lines_to_stderr(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ddpg", "restore", "--sample", "-o", str(tmp_path), "--steps", "1",
                           "-q"], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("PSNR ") and lines[1] == "1 restored, 0 skipped, 0 failed", lines


def test_the_onnx_export_warns_nothing(tmp_path):
    from ddpg.export import export_prior

    fixture = ROOT / "tests" / "fixtures" / "priors" / "ddpm_small.pt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_prior(torch.load(fixture, weights_only=True)["config"], checkpoint=fixture, out=tmp_path / "m.onnx",
                     batch="1:1:2", validate=False, optimize=False)
    assert [str(w.message) for w in caught] == []
