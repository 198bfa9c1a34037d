"""``ddpg bench`` harness on CPU with a tiny inline DDPM: JSON / Markdown / PNG written with every field present
and consistent (a harness smoke test: no speed claims), plus the statistics and FLOP counting it relies on."""

import json

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from ddpg.bench import BenchConfig, count_flops, parse_prior_spec, percentile, summarize_ms
from ddpg.bench.cli import bench_command, parse_batches
from ddpg.errors import ConfigError

TINY = "{kind: ddpm, ch: 32, ch_mult: [1, 2], num_res_blocks: 1, attn_resolutions: [8], image_size: 32}"


def test_percentiles_match_numpy():
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 7.0]
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    s = summarize_ms(values)
    assert s["p50"] <= s["p90"] <= s["p99"] <= s["max"] and s["n"] == 7 and s["mean"] == pytest.approx(32 / 7)


def test_flop_count_of_a_convolution_and_linearity_in_batch():
    class OneConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x, t, y=None):
            return self.conv(x)

    flops = count_flops(OneConv(), 2, (16, 16))
    assert flops == 2 * 2 * 3 * 8 * 9 * 16 * 16  # 2 FLOP per multiply-add, batch 2
    assert count_flops(OneConv(), 4, (16, 16)) == 2 * flops


def test_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="--backend"):
        BenchConfig(backend="jax").validate()
    with pytest.raises(ConfigError, match="--plain"):
        BenchConfig(plain=True, precision="fp16").validate()
    with pytest.raises(ConfigError, match="--prior"):
        parse_prior_spec("{kind: [unclosed")
    assert parse_prior_spec(TINY)["ch"] == 32 and parse_prior_spec("face64") == "face64"
    assert parse_batches("1, 8,32") == [1, 8, 32]
    with pytest.raises(typer.BadParameter):
        parse_batches("1,x")


def test_bench_command_writes_consistent_reports(tmp_path):
    app = typer.Typer()
    app.command("bench")(bench_command)
    app.command("other")(lambda: None)  # two commands: the subcommand name is required, as under `ddpg`
    out = tmp_path / "res" / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--prior", TINY, "--batch", "1,2", "--steps", "2", "--iters", "2",
                                      "--warmup", "1", "--precision", "fp32", "--size", "16", "--task", "deblur_gauss",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["schema"] == "ddpg-bench/1" and "not speed claims" in report["note"]
    assert report["environment"]["torch"] == torch.__version__ and report["environment"]["device"] == "cpu"
    (series,) = report["series"]
    assert series["config"]["steps"] == 2 and series["config"]["device"] == "cpu"
    assert [r["batch"] for r in series["results"]] == [1, 2]
    for r in series["results"]:
        for key in ("unet_ms", "step_ms", "guidance_ms"):
            s = r[key]
            assert 0 < s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"], key
        assert r["step_ms"]["n"] == 2  # one latency per step of the timed restoration
        assert r["images_per_s"] == pytest.approx(r["batch"] / r["restore_s"])
        assert r["s_per_image"] == pytest.approx(r["restore_s"] / r["batch"])
        assert 0 < r["guidance_share"] <= 1 and r["peak_mem_mib"] is None  # no GPU memory on CPU
        assert r["achieved_tflops"] == pytest.approx(r["flops_per_nfe"] * 2 / r["restore_s"] / 1e12)
        assert r["fraction_of_matmul"] == pytest.approx(r["achieved_tflops"] / series["matmul"]["tflops"])
    assert series["results"][1]["flops_per_nfe"] == 2 * series["results"][0]["flops_per_nfe"]
    acc = series["accuracy"]
    assert acc["precision"] == "fp16" and acc["reference"] == "torch fp32 plain"
    assert acc["psnr_difference_db"] == pytest.approx(acc["psnr_low"] - acc["psnr_reference"])
    assert 0 < acc["rel_l2"] < 1e-2  # fp16 torso vs fp32 on the same noise: close but not identical
    md = out.with_suffix(".md").read_text()
    assert "| torch fp32 channels-last | 2 | 2 |" in md and "CPU smoke run" in md
    with Image.open(out.with_suffix(".png")) as im:
        assert im.format == "PNG" and im.size[0] > 300
    assert not list(out.parent.glob("*.part"))  # atomic writes leave no temporaries


def test_bench_restore_script_merges_batches_and_resumes(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_restore.py"
    spec = importlib.util.spec_from_file_location("bench_restore", script)
    bench_restore = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_restore)
    args = ["--prior", TINY, "--configs", "fp32", "--batches", "1,2", "--steps", "1", "--iters", "1", "--warmup",
            "1", "--size", "16", "--task", "deblur_gauss", "--no-accuracy", "--device", "cpu", "--resume", "--out",
            str(tmp_path / "r")]
    assert bench_restore.main(args) == 0
    first = json.loads((tmp_path / "r.json").read_text())
    (series,) = first["series"]
    assert [r["batch"] for r in series["results"]] == [1, 2] and series["config"]["batches"] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "r.raw").iterdir()) == ["fp32__b1.json", "fp32__b2.json"]
    monkeypatch.setattr(bench_restore, "run_bench", lambda *a, **k: pytest.fail("--resume must reuse the runs"))
    assert bench_restore.main(args) == 0
    assert json.loads((tmp_path / "r.json").read_text())["series"][0]["results"] == series["results"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA events, graphs, peak memory)")
def test_bench_harness_on_cuda_with_graph_and_fp16():
    from ddpg.bench import run_bench

    series = run_bench(BenchConfig(prior=TINY, precision="fp16", cuda_graph=True, batches=[1, 4], steps=4, iters=5,
                                   warmup=2, device="cuda"))
    for r in series["results"]:
        assert r["peak_mem_mib"] > 0 and 0 < r["guidance_share"] <= 1 and r["fraction_of_matmul"] > 0
    assert series["matmul"]["dtype"] == "float16" and series["matmul"]["tflops"] > 1
    assert abs(series["accuracy"]["psnr_difference_db"]) < 1.0 and series["accuracy"]["rel_l2"] < 5e-2
