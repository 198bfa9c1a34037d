"""``ddpg bench`` harness on CPU with a tiny inline DDPM: JSON / Markdown / PNG written with every field present
and consistent (a harness smoke test: no speed claims), plus the statistics and FLOP counting it relies on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from ddpg.bench import BenchConfig, check_targets, classify, count_flops, parse_prior_spec, percentile, summarize_ms
from ddpg.bench.report import markdown
from ddpg.cli.bench import bench_command, parse_batches
from ddpg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

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


class TickingClock:
    """perf_counter for ddpg.bench.timing that advances exactly ``tick`` seconds per reading, so every timed
    interval of the harness is known: one mark per step → each step ``tick``, each call ``tick``."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_bench_command_writes_consistent_reports(tmp_path, monkeypatch):
    """With a clock that ticks 0.125 s per reading: each step and call takes 125 ms, a 2-step restoration
    0.25 s, so batch B runs at 4·B images/s; the CPU matmul (n = 512) runs at 2·512³ FLOP / 0.125 s."""
    from ddpg.bench import timing

    monkeypatch.setattr(timing, "time", TickingClock(0.125))
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
    assert series["matmul"]["ms"] == pytest.approx(125.0)
    assert series["matmul"]["tflops"] == pytest.approx(2 * 512**3 / 0.125 / 1e12)
    for r in series["results"]:
        for key in ("unet_ms", "step_ms", "guidance_ms"):
            assert r[key]["min"] == pytest.approx(125.0) and r[key]["max"] == pytest.approx(125.0), key
        assert r["step_ms"]["n"] == 2  # one latency per step of the timed restoration
        assert r["restore_s"] == pytest.approx(0.25)
        assert r["images_per_s"] == pytest.approx(4.0 * r["batch"])
        assert r["s_per_image"] == pytest.approx(0.25 / r["batch"])
        assert r["guidance_share"] == pytest.approx(1.0) and r["peak_mem_mib"] is None  # no GPU memory on CPU
        assert r["achieved_tflops"] == pytest.approx(r["flops_per_nfe"] * 2 / 0.25 / 1e12)  # 2 NFE in 0.25 s
        assert r["fraction_of_matmul"] == pytest.approx(r["achieved_tflops"] / 0.002147483648)
        prof = r["profile"]
        assert set(prof["part_shares"]) == {"unet", "guidance"} and prof["shares"]["convolution"] > 0
        assert sum(prof["shares"].values()) == pytest.approx(1.0) and prof["top"][0]["share"] >= prof["top"][1]["share"]
    assert series["results"][1]["flops_per_nfe"] == 2 * series["results"][0]["flops_per_nfe"]
    acc = series["accuracy"]  # the asked precision only; random weights: no PSNR against the ground truth
    assert acc["precision"] == "fp32" and acc["reference"] == "torch fp32 plain" and "random weights" in acc["note"]
    assert acc["psnr_reference"] is acc["psnr_low"] is acc["psnr_difference_db"] is None
    assert acc["rel_l2"] < 1e-5 and float(acc["psnr_low_vs_reference"]) > 80  # fp32 against fp32 (inf: equal)
    md = out.with_suffix(".md").read_text()
    assert "| torch fp32 | 2 | 2 |" in md and "CPU smoke run" in md
    accuracy_md = md[md.index("Accuracy:"):]
    assert "fp16" not in accuracy_md and "| torch fp32 | torch fp32 plain | – | fp32 | – | – |" in accuracy_md
    assert "random weights: the PSNR of a restoration against the ground truth means nothing" in accuracy_md
    with Image.open(out.with_suffix(".png")) as im:
        assert im.format == "PNG" and im.size[0] > 300
    assert not list(out.parent.glob("*.part"))  # atomic writes leave no temporaries


def test_the_accuracy_check_scores_against_the_ground_truth_only_with_real_weights(tmp_path):
    from ddpg.bench import run_bench

    checkpoint = ROOT / "tests" / "fixtures" / "priors" / "ddpm_small.pt"
    config = tmp_path / "ddpm_small.yaml"
    config.write_text(json.dumps(torch.load(checkpoint, weights_only=True)["config"]))  # JSON is YAML
    common = {"prior": str(config), "steps": 2, "iters": 1, "warmup": 0, "profile": False, "device": "cpu",
              "threads": 1}
    acc = run_bench(BenchConfig(checkpoint=str(checkpoint), **common), measure_matmul=False)["accuracy"]
    assert acc["note"] is None and acc["precision"] == "fp32"
    assert acc["psnr_difference_db"] == pytest.approx(acc["psnr_low"] - acc["psnr_reference"])
    assert run_bench(BenchConfig(plain=True, **common), measure_matmul=False)["accuracy"] is None  # its reference


def _bench_restore():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_restore", ROOT / "benchmarks" / "bench_restore.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_restore_script_merges_batches_and_resumes(tmp_path, monkeypatch):
    bench_restore = _bench_restore()
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
        assert r["peak_reserved_mib"] >= r["peak_mem_mib"] and r["step_ms"]["n"] == 4
        assert {"convolution", "groupnorm", "fft"} <= set(r["profile"]["shares"]), r["profile"]  # GPU kernel names
    assert series["matmul"]["dtype"] == "float16" and series["matmul"]["tflops"] > 1
    assert series["accuracy"]["precision"] == "fp16" and series["accuracy"]["rel_l2"] < 5e-2


# --- profile, targets, environment ---------------------------------------------------------------------------

KERNELS = {  # typical CUDA kernel names (cuDNN, cuBLAS, flash attention, cuFFT, Inductor) and their kinds
    "void at::native::(anonymous namespace)::RowwiseMomentsCUDAKernel<float, float>(long, float, float const*)":
        "groupnorm",
    "triton_red_fused_convolution_native_group_norm_0": "groupnorm",
    "sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x128x64_cudnn": "convolution",
    "void cudnn::ops::nchwToNhwcKernel<__half, __half, float, false, true>(cudnn::ops::nchw2nhwc_params_t<float>)":
        "convolution",
    "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 64, 4, cutlass::half_t>>(Params)":
        "attention",
    "fmha_cutlassF_f32_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<float>::Params)": "attention",
    "sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1": "matmul",
    "void regular_fft<256u, EPT_8, 32u, 8u, CONSTANT, 0u, 0u>(fft_params)": "fft",
    "void vector_fft_c2r<64u, EPT_8, 8u, 2u>(kernel_arguments_t<unsigned int>)": "fft",
    "triton_poi_fused_add_mul_silu_3": "other",
    "Memcpy DtoD (Device -> Device)": "memory",
    "aten::mkldnn_convolution": "convolution",
    "aten::native_group_norm": "groupnorm",
    "aten::_fft_r2c": "fft",
}


@pytest.mark.parametrize("name", list(KERNELS))
def test_kernel_names_are_classified(name):
    assert classify(name) == KERNELS[name]


def test_profile_shares_of_a_unet_like_module_and_an_fft_guidance():
    from ddpg.bench import profile_parts

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.GroupNorm(8, 32), torch.nn.SiLU())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        prof = profile_parts({"unet": lambda: net(x), "guidance": lambda: torch.fft.irfft2(torch.fft.rfft2(x))},
                             torch.device("cpu"), calls=2)
    assert prof["calls"] == 2 and sum(prof["part_shares"].values()) == pytest.approx(1.0)
    assert {"convolution", "groupnorm", "fft"} <= set(prof["shares"])
    assert {k["part"] for k in prof["top"] if k["category"] == "fft"} == {"guidance"}
    assert [k["share"] for k in prof["top"]] == sorted((k["share"] for k in prof["top"]), reverse=True)


def _row(batch, s_per_image, guidance_share):
    return {"batch": batch, "s_per_image": s_per_image, "images_per_s": 1 / s_per_image,
            "guidance_share": guidance_share, "profile": {"calls": 3, "us_per_call": {"unet": 900.0},
                                                          "part_shares": {"unet": 0.9, "guidance": 0.1},
                                                          "shares": {"groupnorm": 0.6, "convolution": 0.4},
                                                          "top": [{"name": "RowwiseMomentsCUDAKernel", "part": "unet",
                                                                   "category": "groupnorm", "us_per_call": 500.0,
                                                                   "launches_per_call": 40.0, "share": 0.6}]}}


def test_targets_are_checked_and_missed_rows_profiled():
    series = {"label": "fast", "config": {"prior": "celeba_hq", "steps": 100},
              "results": [_row(1, 0.4, 0.02), _row(8, 0.2, 0.08)],
              "accuracy": {"psnr_difference_db": -0.3}}
    checks = {(c["target"], c["batch"]): c["met"] for c in check_targets(series)}
    assert checks == {("latency_s", 1): True, ("images_per_s", 8): False, ("guidance_share", 1): True,
                      ("guidance_share", 8): False, ("psnr_difference_db", 1): False}
    assert check_targets({**series, "config": {"prior": "imagenet256_uncond"}})[0]["limit"] == 1.5
    assert check_targets({**series, "config": {"prior": "face64"}}) == []
    for c in (_row(1, 0.4, 0.02), _row(8, 0.2, 0.08)):
        c.update({"step_ms": {"p50": 1.0, "p90": 1.0, "p99": 1.0}, "unet_ms": {"p50": 1.0, "p90": 1.0, "p99": 1.0},
                  "peak_mem_mib": None, "flops_per_nfe": 10**9, "achieved_tflops": 1.0})
        series["results"][c["batch"] > 1] = c
    del series["accuracy"]  # the accuracy table has its own test above
    md = markdown({"created_utc": "now", "environment": {"device": "cuda", "gpu": "H200", "torch": "x",
                                                        "python": "3.12", "platform": "linux"},
                   "series": [series], "failures": [{"config": "ort-fp16", "batch": 8, "error": "boom"}]})
    assert "| fast | images_per_s | 8 |" in md and "**no**" in md and "- ort-fp16 batch 8: boom" in md
    assert "**fast, batch 8**" in md and "**fast, batch 1**" not in md  # only the rows behind missed targets


def test_nvidia_smi_falls_back_to_name_and_driver(monkeypatch):
    from ddpg.bench import report

    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd[1])
        if "clocks" in cmd[1]:
            raise subprocess.CalledProcessError(2, cmd, "Field 'clocks.max.mem' is not a valid field")
        return subprocess.CompletedProcess(cmd, 0, stdout="NVIDIA H200, 580.159.03\nNVIDIA H200, 580.159.03\n")

    monkeypatch.setattr(report.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(report.subprocess, "run", fake_run)
    assert report.nvidia_smi() == {"name": "NVIDIA H200", "driver": "580.159.03"} and len(calls) == 2
    monkeypatch.setattr(report.shutil, "which", lambda name: None)
    assert report.nvidia_smi() == {}


# --- timing protocol on a fake CUDA device -------------------------------------------------------------------

def test_cuda_clock_records_events_and_synchronises_only_around_the_loop(monkeypatch):
    from ddpg.bench import Clock

    log = []

    class FakeEvent:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.t = None

        def record(self, stream):
            self.t = len(log)
            log.append("record")

        def elapsed_time(self, end):
            assert "sync" in log[end.t:], "an event is read before the synchronisation after the loop"
            return float(end.t - self.t)

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: "stream")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("sync"))
    times = Clock(torch.device("cuda")).time_calls(lambda: log.append("call"), iters=4, warmup=2)
    assert log == ["call", "call", "sync", "record"] + ["call", "record"] * 4 + ["sync"]
    assert times == [2.0] * 4  # one call and one record between consecutive marks


def test_warm_up_restoration_stops_after_a_few_steps():
    from ddpg.bench.harness import WARMUP_STEPS, RestorationPath, build_prior
    from ddpg.models import as_denoiser
    from ddpg.operators import make_operator

    prior = build_prior(parse_prior_spec(TINY), None, torch.device("cpu"))
    inner = as_denoiser(prior)

    class Counting:
        calls = 0

        def __getattr__(self, name):
            return getattr(inner, name)

        def __call__(self, x, t):
            Counting.calls += 1
            return inner(x, t)

    for plain in (True, False):
        Counting.calls = 0
        path = RestorationPath(BenchConfig(prior=TINY, plain=plain, steps=10), Counting(),
                               make_operator("deblur_gauss", 16))
        path.warm_up(torch.zeros(1, 3, 16, 16))
        assert Counting.calls == WARMUP_STEPS, plain


# --- bench_restore.py: resume, failures, interrupts, batch plans -------------------------------------------

def _fake_part(cfg):
    r = _row(cfg.batches[0], 0.5, 0.1)
    r.update({"step_ms": {"p50": 1.0, "p90": 1.0, "p99": 1.0}, "unet_ms": {"p50": 1.0, "p90": 1.0, "p99": 1.0},
              "restore_s": 0.5 * r["batch"], "peak_mem_mib": None, "flops_per_nfe": 10**9, "achieved_tflops": 1.0})
    config = {**cfg.__dict__, "prior": parse_prior_spec(cfg.prior), "device": "cpu", "size": [16, 16]}
    return {"label": cfg.label, "config": config, "matmul": None, "results": [r], "accuracy": None}


def _script_args(tmp_path, *extra):
    return ["--prior", TINY, "--configs", "fp32,fp16", "--batches", "1,2", "--steps", "1", "--device", "cpu",
            "--resume", "--out", str(tmp_path / "r"), *extra]


def test_bench_restore_keeps_failures_and_reruns_stale_runs(tmp_path, monkeypatch):
    bench_restore = _bench_restore()
    ran = []

    def fake_run_bench(cfg, log=None):
        ran.append((cfg.precision, cfg.batches[0], cfg.steps))
        if cfg.precision == "fp16" and cfg.batches == [2]:
            raise RuntimeError("out of memory")
        return _fake_part(cfg)

    monkeypatch.setattr(bench_restore, "run_bench", fake_run_bench)
    assert bench_restore.main(_script_args(tmp_path)) == 1
    assert len(ran) == 4 and (tmp_path / "r.raw" / "fp16__b2.failed.json").is_file()
    ran.clear()
    assert bench_restore.main(_script_args(tmp_path)) == 1 and ran == []  # finished reused, failed not retried
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["failures"] == [{"config": "fp16", "batch": 2, "error": "RuntimeError: out of memory"}]
    assert bench_restore.main(_script_args(tmp_path, "--retry-failed")) == 1 and ran == [("fp16", 2, 1)]
    ran.clear()
    args = _script_args(tmp_path)
    args[args.index("--steps") + 1] = "2"
    bench_restore.main(args)
    assert sorted(ran) == [("fp16", 1, 2), ("fp16", 2, 2), ("fp32", 1, 2), ("fp32", 2, 2)]  # other settings


def test_bench_restore_interrupt_writes_the_finished_runs(tmp_path, monkeypatch):
    bench_restore = _bench_restore()

    def fake_run_bench(cfg, log=None):
        if cfg.precision == "fp16":
            raise KeyboardInterrupt  # what SIGTERM from `timeout` becomes
        return _fake_part(cfg)

    monkeypatch.setattr(bench_restore, "run_bench", fake_run_bench)
    assert bench_restore.main(_script_args(tmp_path)) == 130
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] and [s["config_name"] for s in report["series"]] == ["fp32"]
    assert not list((tmp_path / "r.raw").glob("*.failed.json"))  # an interrupted run is no failure
    assert "interrupted" in (tmp_path / "r.md").read_text()


def test_bench_restore_batch_plans_and_accuracy_runs(tmp_path, monkeypatch):
    bench_restore = _bench_restore()
    seen = []

    def fake_run_bench(cfg, log=None):
        seen.append((cfg.label, cfg.batches[0], cfg.accuracy))
        return _fake_part(cfg)

    monkeypatch.setattr(bench_restore, "run_bench", fake_run_bench)
    args = ["--prior", TINY, "--configs", "plain,fp16-compile-graph,fp16-graph", "--batches", "1,8,32",
            "--max-plain-batch", "8", "--compile-batches", "32", "--device", "cpu", "--out", str(tmp_path / "r")]
    assert bench_restore.main(args) == 0
    compiled = "torch fp16 channels-last compile(default) +graph"
    assert seen == [("torch fp32 eager (plain path)", 1, True), ("torch fp32 eager (plain path)", 8, False),
                    (compiled, 32, False),  # the batch-1 accuracy check would compile a second time
                    ("torch fp16 +graph", 1, True), ("torch fp16 +graph", 8, False), ("torch fp16 +graph", 32, False)]


# --- gpu_session.sh with a stand-in python ---------------------------------------------------------------------

FAKE_PYTHON = r"""#!/usr/bin/env bash
# stand-in for python3: records bench_restore.py calls, writes their outputs, answers the probes
case "$1" in
  -c) [[ "$2" == *onnxruntime* ]] && exit 1; exit 0 ;;
  -m) exit 0 ;;  # pip installing .wheels/
  -) cat >/dev/null; echo "fake torch"; exit 0 ;;
esac
echo "$*" >>"$CALLS"
out=${@: -1}
mkdir -p "$out.raw" && echo '{}' >"$out.raw/x__b1.json"
for ext in json md png; do echo x >"$out.$ext"; done
"""


def _gpu_session(tmp_path, deadline):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    out, results = tmp_path / "out", tmp_path / "results"
    out.mkdir()
    env = {**os.environ, "PYTHON": str(fake), "OUT": str(out), "RESULTS": str(results), "DEADLINE_S": str(deadline),
           "CALLS": str(tmp_path / "calls"), "SESSION_LOG": str(tmp_path / "session.log"), "PATH": "/usr/bin:/bin"}
    with open(tmp_path / "stdout", "w") as log:
        rc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh")], env=env, stdout=log,
                            stderr=subprocess.STDOUT, timeout=120).returncode
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return rc, calls, out


@pytest.mark.skipif(sys.platform != "linux", reason="bash, tar and coreutils timeout")
def test_gpu_session_runs_the_phases_in_order_and_fills_out(tmp_path):
    rc, calls, out = _gpu_session(tmp_path, 600)
    assert rc == 0, (tmp_path / "stdout").read_text()
    plan = [(c.split("--prior ")[1].split()[0], c.split("--configs ")[1].split()[0]) for c in calls]
    layouts = "fp16-graph,plain,fp16-compile-graph,fp16-graph-cl,fp16-compile-graph-nchw"
    assert plan == [("celeba_hq", "fp16-graph,plain"), ("imagenet256_uncond", "fp16-graph,plain"),
                    ("celeba_hq", "fp16-graph,plain,fp16-compile-graph"),
                    ("imagenet256_uncond", "fp16-graph,plain,fp16-compile-graph"),
                    ("celeba_hq", layouts), ("imagenet256_uncond", layouts)]
    assert all("--resume" in c and "--compile-batches 32" in c and "--repeats 1" in c for c in calls)
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and "bench_results.tgz" in files and "session.log" in files
    reports = {f"bench_h100_{p}.{e}" for p in ("celeba_hq", "imagenet256_uncond") for e in ("json", "md", "png")}
    assert reports <= set(files)
    listing = subprocess.run(["tar", "tzf", str(out / "bench_results.tgz")], capture_output=True, text=True).stdout
    assert "bench_h100_celeba_hq.raw/x__b1.json" in listing


@pytest.mark.skipif(sys.platform != "linux", reason="bash, tar and coreutils timeout")
def test_gpu_session_skips_what_the_deadline_leaves_no_time_for(tmp_path):
    rc, calls, out = _gpu_session(tmp_path, 70)
    assert rc == 1 and calls == []
    assert "skipped celeba_hq" in (tmp_path / "stdout").read_text()


def test_bench_and_export_need_no_platformdirs():
    """The GPU image has no platformdirs: the benchmark and export paths (random weights, no checkpoint cache)
    must import and build a prior without it."""
    code = ("import sys; sys.modules['platformdirs'] = None\n"
            "import ddpg.bench.harness, ddpg.export, ddpg.cli.main\n"
            "from ddpg.bench.harness import build_prior\n"
            "build_prior('face64', None, 'cpu')\n"
            "assert sys.modules['platformdirs'] is None\n")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
