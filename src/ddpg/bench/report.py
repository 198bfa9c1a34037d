"""Benchmark reports: the environment (GPU, driver, library versions), and JSON / Markdown / PNG files written
atomically (temporary file in the same folder, then ``os.replace``)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

from ddpg.errors import ConfigError
from ddpg.io import _atomic

SCHEMA = "ddpg-bench/1"
CPU_NOTE = ("CPU smoke run of the benchmark harness: these numbers check that the harness works and are not "
            "speed claims (the targets in performance.md are for one H100).")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> dict:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    first = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    fields = [f.strip() for f in first.split(",")]
    keys = ("name", "driver", "max_sm_clock", "max_mem_clock", "power_limit")
    return dict(zip(keys, fields, strict=False))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """Device, driver and library versions recorded with every result (deployment.md §15)."""
    import ddpg

    env = {"device": str(device), "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
           "platform": platform.platform(), "ddpg": ddpg.__version__, "torch": torch.__version__,
           "cuda": torch.version.cuda, "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
           "tensorrt": _version("tensorrt") or _version("tensorrt-cu12"), "numpy": _version("numpy")}
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update({"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                    "compute_capability": f"{props.major}.{props.minor}",
                    "cudnn": torch.backends.cudnn.version(), "nvidia_smi": _nvidia_smi(),
                    "cudnn_benchmark": torch.backends.cudnn.benchmark,
                    "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                    "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32})
    return env


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(report: dict, path: Path) -> None:
    _atomic(Path(path), lambda tmp: tmp.write_text(json.dumps(_json_safe(report), indent=2) + "\n"))


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    return str(value)


def markdown(report: dict) -> str:
    """The report as Markdown: environment, command line, one row per (series, batch), accuracy."""
    env = report["environment"]
    lines = [f"# ddpg bench: {report.get('title', '')}".rstrip(), ""]
    if report.get("note"):
        lines += [f"**{report['note']}**", ""]
    device = env.get("gpu") or env.get("cpu")
    lines += [f"- created: {report['created_utc']}",
              f"- device: {device} ({env['device']}); torch {env['torch']}, CUDA {env.get('cuda')}, "
              f"cuDNN {env.get('cudnn')}, ONNX Runtime {env.get('onnxruntime')}, TensorRT {env.get('tensorrt')}",
              f"- driver: {env.get('nvidia_smi', {}).get('driver', '–')}; python {env['python']}; "
              f"{env['platform']}"]
    if report.get("command"):
        lines.append(f"- command: `{report['command']}`")
    lines += ["", "Whole restoration = steps × (UNet + guidance) per image; latency per step from CUDA events "
              "(perf_counter on CPU) after warm-up.", "",
              "| series | batch | steps | s / image | images / s | step p50 / p90 / p99 ms | UNet p50 / p90 / p99 ms "
              "| guidance share | peak MiB | TFLOP/s | of matmul rate |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in report["series"]:
        for r in s["results"]:
            st, un = r["step_ms"], r["unet_ms"]
            frac = r.get("fraction_of_matmul")
            lines.append(
                f"| {s['label']} | {r['batch']} | {s['config']['steps']} | {_fmt(r['s_per_image'])} | "
                f"{_fmt(r['images_per_s'])} | {_fmt(st['p50'])} / {_fmt(st['p90'])} / {_fmt(st['p99'])} | "
                f"{_fmt(un['p50'])} / {_fmt(un['p90'])} / {_fmt(un['p99'])} | {100 * r['guidance_share']:.1f} % | "
                f"{_fmt(r.get('peak_mem_mib'))} | {_fmt(r['achieved_tflops'])} | "
                f"{'–' if frac is None else f'{100 * frac:.1f} %'} |")
    rates = [(s["label"], s.get("matmul")) for s in report["series"] if s.get("matmul")]
    if rates:
        lines += ["", "Matrix-product reference rate, measured in each series' run (the denominator of its last "
                  "column): " + "; ".join(f"{label}: {m['dtype']} {m['n']}³ {m['tflops']:.3g} TFLOP/s"
                                          for label, m in rates)]
    acc = [(s["label"], s["accuracy"]) for s in report["series"] if s.get("accuracy")]
    if acc:
        lines += ["", "Accuracy on the same x_T and noise (batch 1, PSNR in dB against the ground truth):", "",
                  "| series | reference | PSNR reference | low precision | PSNR low | difference dB | PSNR low vs "
                  "reference | rel. L2 |", "|---|---|---|---|---|---|---|---|"]
        for label, a in acc:
            lines.append(f"| {label} | {a['reference']} | {_fmt(a['psnr_reference'], 4)} | {a['precision']} | "
                         f"{_fmt(a['psnr_low'], 4)} | {_fmt(a['psnr_difference_db'], 3)} | "
                         f"{_fmt(a['psnr_low_vs_reference'], 4)} | {_fmt(a['rel_l2'], 3)} |")
    return "\n".join(lines) + "\n"


def write_markdown(report: dict, path: Path) -> None:
    text = markdown(report)
    _atomic(Path(path), lambda tmp: tmp.write_text(text))


def write_plot(report: dict, path: Path) -> None:
    """PNG: throughput (images/s) and latency (s/image) against batch size, one line per series."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError(f"{path}: the plot needs matplotlib (pip install 'ddpg[plot]')") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tp, ax_lat) = plt.subplots(1, 2, figsize=(10, 4))
    for s in report["series"]:
        batches = [r["batch"] for r in s["results"]]
        ax_tp.plot(batches, [r["images_per_s"] for r in s["results"]], marker="o", label=s["label"])
        ax_lat.plot(batches, [r["s_per_image"] for r in s["results"]], marker="o", label=s["label"])
    all_batches = sorted({r["batch"] for s in report["series"] for r in s["results"]})
    for ax, ylabel in ((ax_tp, "images / s (whole restoration)"), (ax_lat, "s / image (whole restoration)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_batches, [str(b) for b in all_batches])
        ax.minorticks_off()
        ax.set_xlabel("batch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    ax_lat.set_yscale("log")
    ax_tp.legend(fontsize=8)
    env = report["environment"]
    title = f"{report.get('title', '')} — {env.get('gpu') or env.get('cpu')}"
    if report.get("note"):
        title += "\n(CPU smoke run, not a speed claim)" if env["device"].startswith("cpu") else ""
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def write_all(report: dict, json_path: Path) -> list[Path]:
    """``json_path`` plus the Markdown and PNG next to it (same stem); returns the three paths. The JSON and
    Markdown are written first, so they exist even when the plot cannot be made."""
    json_path = Path(json_path)
    paths = [json_path, json_path.with_suffix(".md"), json_path.with_suffix(".png")]
    write_json(report, paths[0])
    write_markdown(report, paths[1])
    write_plot(report, paths[2])
    return paths


__all__ = ["CPU_NOTE", "SCHEMA", "environment", "markdown", "now_utc", "write_all", "write_json", "write_markdown",
           "write_plot"]
